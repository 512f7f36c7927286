"""Our two protocol handlers: Strawberry's graphql-transport-ws and legacy graphql-ws
handlers, subclassed, with some methods copied from strawberry-graphql 0.341.2 (verified
against it and graphql-core 3.3.2, `resolvers.runtime.versions.VERIFIED`).

Strawberry runs a WebSocket operation per subscriber: it parses and validates the document
(with our extensions and caches), runs the subscription resolver (which authorises the
topic) and then executes the selection again for every event and every subscriber. Our two
protocol handlers keep everything up to the resolver, and give each operation a `LiveClaim`
as root value (subscriptions/live.py): the `LiveEvents` a resolver returns authorises its
topic and hands it to the claim. The handler then sends the topic's events itself, from the
process's fan-out, where an event is rendered once per selection (subscriptions/rendering.py)
and serialized once. Each subscriber gets that text inside its own frame (only the operation
id differs): `{"id":...,"type":"next","payload":<text>}` (graphql-transport-ws) or
`{"type":"data","id":...,"payload":<text>}` (legacy graphql-ws). This module keeps the
protocol work only."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Generator
from contextlib import suppress
from json import JSONDecodeError
from typing import Any

from graphql import (
    GraphQLError,
)
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.exceptions import ConnectionRejectionError
from strawberry.execution import optimized_is_awaitable
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema import Schema
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyConnectionInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import OperationMessage
from strawberry.types.execution import PreExecutionError
from strawberry.utils.aio import aclosing

from models.transient import is_transient
from resolvers.context import Context
from resolvers.errors import UNAVAILABLE, UNAVAILABLE_MESSAGE
from resolvers.schema import MaskUnexpectedErrors
from subscriptions.fanout import Subscriber
from subscriptions.live import LiveClaim
from subscriptions.realtime import Realtime
from subscriptions.rendering import GraphQLSetup, selection_of

log = logging.getLogger(__name__)
_MASK = MaskUnexpectedErrors()
# The close code of a connection refused on a transient failure ("try again later"),
# which reconnecting clients retry, where 4403 tells them their credential is bad.
TRY_AGAIN_LATER = 1013
UNAVAILABLE_ERROR = {"message": UNAVAILABLE_MESSAGE, "extensions": {"code": UNAVAILABLE}}


def _rendering_setup(handler: Any) -> GraphQLSetup:
    """What rendering needs of the schema the handler serves (one per view)."""
    view = handler.view
    setup = getattr(view, "rendering_setup", None)
    if setup is None:
        schema: Schema = handler.schema
        realtime: Realtime = view.realtime
        setup = view.rendering_setup = GraphQLSetup(
            schema=schema._schema,
            executor_class=schema.execution_context_class,
            make_context=lambda: Context(request=None, response=None, realtime=realtime),
            is_awaitable=optimized_is_awaitable,
            report_errors=schema.process_errors,
            format_error=_formatted,
        )
    return setup


def _formatted(error: GraphQLError) -> dict[str, Any]:
    return (_MASK.anonymise_error(error) if _MASK.should_mask_error(error) else error).formatted


class _LiveSender:
    """Sends one operation's events, with no task while nothing is pending: an idle
    subscriber keeps this object and its fan-out buffer, not a task suspended in a loop.
    It stands where the handler keeps the operation's task, so Strawberry's bookkeeping
    (the per-connection subscription limit, duplicate ids, stop/complete and shutdown)
    sees the operation as running: `cancel()` ends it and `await`ing it waits for the
    last send. `complete` is the frame sent once it has ended (legacy graphql-ws sends
    one when an operation is stopped)."""

    __slots__ = ("complete", "handler", "prefix", "subscriber", "task")

    def __init__(self, handler: Any, subscriber: Subscriber, prefix: str, complete: str | None):
        self.handler = handler
        self.subscriber: Subscriber | None = subscriber
        self.prefix = prefix
        self.complete = complete
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        assert self.subscriber is not None
        self.subscriber.wake = self
        if self.subscriber.pending:  # arrived while the first snapshots were sent
            self()

    def __call__(self) -> None:
        """The subscriber has items pending: a task sends them, then ends."""
        if self.task is None and self.subscriber is not None:
            self.task = asyncio.get_running_loop().create_task(self._send_pending())

    async def _send_pending(self) -> None:
        send_text = self.handler.websocket.ws.send_text
        try:
            while self.subscriber is not None and self.subscriber.pending:
                for item in self.subscriber.take_now():
                    await send_text(self.prefix + item + "}")
        except WebSocketDisconnect:
            self._leave()  # the handler's reader sees the close and shuts the connection
        except Exception:
            self._leave()
            log.exception("sending a subscription's events failed")
        finally:
            self.task = None

    def _leave(self) -> None:
        if self.subscriber is not None:
            self.subscriber.wake = None
            self.handler.view.realtime.leave(self.subscriber)
            self.subscriber = None

    def cancel(self) -> bool:
        self._leave()
        if self.task is not None:
            self.task.cancel()
        return True

    def __await__(self) -> Generator[Any, None, None]:
        return self._ended().__await__()

    async def _ended(self) -> None:
        if self.task is not None:
            with suppress(asyncio.CancelledError):
                await self.task
        if self.complete is not None:
            complete, self.complete = self.complete, None
            await self.handler.websocket.ws.send_text(complete)


async def _go_live(
    handler: Any, claim: LiveClaim, frame_prefix: str, complete: str | None = None
) -> _LiveSender:
    """Joins the claimed topic and sends its current snapshots; the sender then sends its
    events until cancelled."""
    assert claim.topic is not None
    realtime: Realtime = handler.view.realtime
    selection = selection_of(claim, _rendering_setup(handler))
    subscriber, items = await realtime.subscribe(claim.topic, selection)
    del selection  # an idle subscriber keeps only what it needs
    sender = _LiveSender(handler, subscriber, frame_prefix, complete)
    try:
        send_text = handler.websocket.ws.send_text
        for item in items:
            await send_text(frame_prefix + item + "}")
    except WebSocketDisconnect as error:
        sender.cancel()
        raise WebSocketDisconnected from error
    except BaseException:
        sender.cancel()
        raise
    sender.start()
    return sender


async def _initialised_or_try_later(handler: Any, init: Awaitable[None]) -> bool:
    """Runs the protocol's connection_init; a credential that could not be checked for a
    transient failure closes the connection with 1013 instead. False when closed."""
    try:
        await init
    except Exception as error:
        if not is_transient(error):
            raise
        await handler.websocket.close(code=TRY_AGAIN_LATER, reason="try again later")
        return False
    return True


def _forget_credentials(context: Context) -> None:
    """After connection_init: the principal is known, the credential need not be kept."""
    context.connection_params = None


def _forget_message(message: object) -> None:
    """Strawberry's reader keeps the last message it read until the next one arrives: an
    idle subscriber would keep its whole subscribe message."""
    if isinstance(message, dict):
        message.clear()


class _MessageLoop:
    """Both handlers' `handle`: Strawberry 0.341's, reading messages as its adapter's
    iter_json does (through Starlette's receive_text), but in this one frame: an idle
    connection waited in a generator and a receive_text of its own, and the generator kept
    the last text received (an idle subscriber's whole subscribe message). A message that
    is not text closes the socket with `not_text_code`; one that is not JSON closes it with
    4400, unless `junk_ignored` (legacy graphql-ws)."""

    not_text_code: int
    junk_ignored: bool

    async def handle(self) -> None:
        handler: Any = self
        handler.starting()
        ws = handler.websocket.ws
        try:
            # Accepted by the view: connected until either side closes.
            while ws.application_state == WebSocketState.CONNECTED:
                received = await ws.receive()
                if received["type"] == "websocket.disconnect":
                    break
                try:
                    message = handler.view.decode_json(received["text"])
                except KeyError:
                    reason = "WebSocket message type must be text"
                    await handler.websocket.close(code=self.not_text_code, reason=reason)
                    break
                except JSONDecodeError:
                    if self.junk_ignored:
                        continue
                    await handler.handle_invalid_message("WebSocket message must be valid JSON")
                    break
                finally:
                    received = None
                await handler.handle_message(message)
                message = None
        except WebSocketDisconnected:
            pass
        finally:
            await handler.ending()


class LiveTransportWSHandler(_MessageLoop, BaseGraphQLTransportWSHandler[Context, None]):
    not_text_code = 4400  # handle_invalid_message's
    junk_ignored = False

    def starting(self) -> None:
        self.on_request_accepted()

    async def ending(self) -> None:
        await self.shutdown()

    async def handle_message(self, message: Message) -> None:
        await super().handle_message(message)
        _forget_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await _initialised_or_try_later(self, super().handle_connection_init(message))
        self.connection_init_timeout_task = None  # done with: not kept for the connection
        _forget_credentials(self.context)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Strawberry 0.341's run_operation, with a LiveClaim as root value, served between
        the operation's own results and its completion."""
        # One copy of a document's text, however many subscribers sent it.
        operation.query = sys.intern(operation.query)
        claim = LiveClaim(operation.query, operation.operation_name, operation.variables)
        try:
            result_source = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=self.context,
                root_value=claim,
                operation_name=operation.operation_name,
            )
            async with aclosing(result_source):
                await self._send_result_stream(operation, result_source)
            del result_source
            if claim.topic is None:
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
                return
            prefix = sys.intern(f'{{"id":{json.dumps(operation.id)},"type":"next","payload":')
            sender = await _go_live(self, claim, prefix)
            if operation.completed or self.operations.get(operation.id) is not operation:
                sender.cancel()  # stopped meanwhile (never, short of a race): not kept
                return
            # The operation stays registered, its sender in place of this (ending) task.
            operation.task = sender  # type: ignore[assignment]
            operation.variables = None
        except (_OperationStreamClosed, WebSocketDisconnected):
            return
        except Exception as error:
            if is_transient(error):  # going live failed (the snapshot's read): retryable
                with suppress(Exception):  # an error message ends (and forgets) the operation
                    await operation.send_operation_message(
                        {"id": operation.id, "type": "error", "payload": [UNAVAILABLE_ERROR]}
                    )
                return
            await self.handle_task_exception(error)
            with suppress(Exception):
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise


class LiveGraphQLWSHandler(_MessageLoop, BaseGraphQLWSHandler[Context, None]):
    not_text_code = 1002
    junk_ignored = True

    def starting(self) -> None:
        pass

    async def ending(self) -> None:
        if self.keep_alive_task:
            self.keep_alive_task.cancel()
            with suppress(BaseException):
                await self.keep_alive_task
        await self.cleanup()

    async def handle_message(self, message: OperationMessage) -> None:
        await super().handle_message(message)
        _forget_message(message)

    async def handle_connection_init(self, message: LegacyConnectionInitMessage) -> None:
        await _initialised_or_try_later(self, self._accept_connection_init(message))

    async def _accept_connection_init(self, message: LegacyConnectionInitMessage) -> None:
        """Strawberry 0.341's, except that a refused credential closes the socket with 4403
        after the protocol's `connection_error`, as graphql-transport-ws does: Strawberry's
        1011 says the server failed (and the request log would count a server error)."""
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            await super().handle_connection_init(message)  # connection_error, close 1000
            return
        self.context.connection_params = payload
        try:
            await self.view.on_ws_connect(self.context)
        except ConnectionRejectionError as error:
            await self.send_message({"type": "connection_error", "payload": error.payload})
            await self.websocket.close(code=4403, reason="Forbidden")
            return
        finally:
            _forget_credentials(self.context)
        await self.send_message({"type": "connection_ack"})
        self.connection_acknowledged = True
        if self.keep_alive:
            self.keep_alive_task = asyncio.create_task(self.handle_keep_alive())

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        """Strawberry 0.341's handle_async_results, with a LiveClaim as root value, served
        between the operation's own results and its completion."""
        query = sys.intern(query)
        claim = LiveClaim(query, operation_name, variables)
        try:
            result_source = await self.schema.subscribe(
                query=query,
                variable_values=variables,
                operation_name=operation_name,
                context_value=self.context,
                root_value=claim,
            )
            self.subscriptions[operation_id] = result_source
            is_first_result = True
            async for result in result_source:
                if is_first_result and isinstance(result, PreExecutionError):
                    assert result.errors
                    error = result.errors[0].formatted
                    await self.send_message({"type": "error", "id": operation_id, "payload": error})
                    return
                await self.send_data_message(result, operation_id)
                is_first_result = False
            del result_source
            self.subscriptions.pop(operation_id, None)
            if claim.topic is None:
                await self.send_message({"type": "complete", "id": operation_id})
                return
            quoted = json.dumps(operation_id)
            sender = await _go_live(
                self,
                claim,
                sys.intern(f'{{"type":"data","id":{quoted},"payload":'),
                sys.intern(f'{{"type":"complete","id":{quoted}}}'),
            )
            if self.tasks.get(operation_id) is not asyncio.current_task():
                sender.complete = None
                sender.cancel()  # stopped meanwhile (never, short of a race): not kept
                return
            # Counted as running by the subscription limit: the sender replaces this task.
            self.tasks[operation_id] = sender  # type: ignore[assignment]
        except WebSocketDisconnected:
            return
        except asyncio.CancelledError:
            await self.send_message({"type": "complete", "id": operation_id})
        except Exception as error:
            if not is_transient(error):  # going live failed (the snapshot's read): retryable
                raise
            with suppress(Exception):
                await self.send_message(
                    {"type": "error", "id": operation_id, "payload": UNAVAILABLE_ERROR}
                )
        finally:
            self.subscriptions.pop(operation_id, None)
            if self.tasks.get(operation_id) is asyncio.current_task():
                self.tasks.pop(operation_id, None)


async def connection_handler(view: Any, request: WebSocket) -> Any | None:
    """Strawberry 0.341's `run` for a WebSocket up to the protocol handler, which it returns
    for the caller to `handle()` instead of running it itself: `run` waited for the handler
    to end, its frame kept for the connection's whole life. None when the handshake was
    refused (an origin not allowed: 403) or no protocol fits (closed with 4406)."""
    if not view._check_websocket_origin(request):
        await view.reject_websocket(request)
        return None
    root_value = await view.get_root_value(request)
    subprotocol = await view.pick_websocket_subprotocol(request)
    response = await view.create_websocket_response(request, subprotocol)
    websocket = view.websocket_adapter_class(view, request, response)
    context = await view.get_context(request, response=response)
    arguments = {
        "view": view,
        "websocket": websocket,
        "context": context,
        "root_value": root_value,
        "schema": view.schema,
        "max_subscriptions_per_connection": view.max_subscriptions_per_connection,
    }
    if subprotocol == GRAPHQL_TRANSPORT_WS_PROTOCOL:
        return view.graphql_transport_ws_handler_class(
            **arguments, connection_init_wait_timeout=view.connection_init_wait_timeout
        )
    if subprotocol == GRAPHQL_WS_PROTOCOL:
        return view.graphql_ws_handler_class(
            **arguments, keep_alive=view.keep_alive, keep_alive_interval=view.keep_alive_interval
        )
    await websocket.close(4406, "Subprotocol not acceptable")
    return None
