"""The ASGI application factory: GraphQL over HTTP and WebSocket at /graphql, the Usage
page at /."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cross_web import HTTPException
from graphql import ExecutionResult
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from api.auth import authenticate
from api.body_limit import BodySizeLimit
from api.cors import cors_middleware
from api.database import apply_migrations, close_database, init_database, plain_postgres_dsn
from api.graphiql import graphiql_page, static_files
from api.http_answer import (
    JSON,
    NOT_A_REQUEST,
    answer_status,
    decode_json,
    encode_json,
    is_json_container,
    refusal,
    response_media_type,
    shape_body,
    unknown_operation,
)
from api.jobs import JobRunner, default_jobs
from api.logging_setup import configure_logging
from api.metrics import Metrics
from api.rate_limit import RateLimitMiddleware
from api.request_log import (
    RequestLogMiddleware,
    note_graphql_operation,
    note_graphql_result,
    note_principal,
    note_refusal,
)
from api.request_log_writer import RequestLogWriter
from api.routes.export import export_route
from api.routes.health import health_routes
from api.routes.request_logs import ingest_route
from api.routes.usage_page import usage_page_route
from api.settings import Settings, get_settings
from api.transport import LiveGraphQLWSHandler, LiveTransportWSHandler, serve_websocket
from api.transport.json_request import (
    POST_OPERATIONS,
    SubResponse,
    is_plain_post,
    plain_request,
)
from api.unavailable import TransientFailureMiddleware, mark_unavailable
from api.webhook_delivery import WebhookDeliverer
from models.accounts import InvalidCredential
from models.api_key_use import flush_key_use
from resolvers.context import Context
from resolvers.cost_budgets import DEFAULT_BUDGETS, CostBudgets
from resolvers.runtime.versions import fast_paths_enabled
from resolvers.schema import schema
from subscriptions.realtime import Realtime

log = logging.getLogger("usagegraph.app")

PRINCIPAL_SCOPE_KEY = "usagegraph.principal"
NOT_A_NAME = "The GraphQL operation's `operationName` must be a string or null, if provided."


class UsageGraphQL(GraphQL):
    """Strawberry's ASGI view with our context and WebSocket authentication. WebSockets go
    through our transport (api/transport/: subscriptions rendered once per selection) when
    `fast_websockets` (by default: when the fast paths may run), else through Strawberry's
    stock handlers."""

    def __init__(
        self,
        *args: Any,
        realtime: Realtime,
        secret: str,
        public_url: str | None = None,
        cost_budgets: CostBudgets = DEFAULT_BUDGETS,
        fast_websockets: bool | None = None,
        webhooks_allow_private: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.realtime = realtime
        self.webhooks_allow_private = webhooks_allow_private
        self.secret = secret
        self.public_url = public_url
        self.cost_budgets = cost_budgets
        self.fast_paths = fast_paths_enabled()
        self.fast_websockets = self.fast_paths if fast_websockets is None else fast_websockets
        if self.fast_websockets:
            self.graphql_transport_ws_handler_class = LiveTransportWSHandler
            self.graphql_ws_handler_class = LiveGraphQLWSHandler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            request = Request(scope, receive)
            try:
                response = await self.answer(request)
            except HTTPException as error:  # Strawberry answers these in plain text
                response = refusal(error, request.headers.get("accept"))
            await response(scope, receive, send)
            return
        websocket = WebSocket(scope, receive=receive, send=send)
        if self.fast_websockets:
            await serve_websocket(self, websocket)
        else:
            await self.run(websocket)

    async def answer(self, request: Request) -> Response:
        """The stock view's answer (`run`). The common request, a plain JSON POST
        (api/transport/json_request.py), takes the same steps directly when the fast paths
        run: none of `run`'s others (the request adapter, the IDE and WebSocket checks,
        streamed and batched results) can apply to it."""
        if self.fast_paths and is_plain_post(request.scope):
            try:
                operation = plain_request(decode_json(await request.body()))
            except ValueError:  # not JSON: the stock parsing answers it
                operation = None
            if operation is not None:
                sub_response = SubResponse()
                context = await self.get_context(request, response=sub_response)
                result = await self.execute_http(
                    request, operation, context, sub_response, POST_OPERATIONS
                )
                data = await self.process_result(request, result)
                if result.errors:
                    self._handle_errors(result.errors, data)
                return self.create_response(data, sub_response)
        return await self.run(request)

    async def get_context(self, request: Any, response: Any = None) -> Context:
        return Context(
            request=request,
            response=response,
            principal=request.scope.get(PRINCIPAL_SCOPE_KEY),
            realtime=self.realtime,
            secret=self.secret,
            public_url=self.public_url,
            cost_budgets=self.cost_budgets,
            webhooks_allow_private=self.webhooks_allow_private,
        )

    async def execute_single(  # type: ignore[override]
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: Any,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        return await self.execute_http(
            request,
            request_data,
            context,
            sub_response,
            OperationType.from_http(request_adapter.method),
        )

    async def execute_http(
        self,
        request: Request,
        operation: GraphQLRequestData,
        context: Context,
        sub_response: Response,
        allowed: set[OperationType],
    ) -> ExecutionResult:
        """One operation over HTTP; sets the answer's status and media type on
        `sub_response` (api/http_answer.py)."""
        if not isinstance(operation.operation_name, str | None):
            raise HTTPException(400, NOT_A_NAME)
        context.preserialized = True  # this view's encoder splices them
        context.operation_name = operation.operation_name
        context.notes_operation = True  # for the request log (note_graphql_operation)
        try:
            result = await self.schema.execute(
                operation.query,
                root_value=await self.get_root_value(request),
                variable_values=operation.variables,
                context_value=context,
                operation_name=operation.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=operation.extensions,
            )
        except CannotGetOperationTypeError as error:
            result = unknown_operation(error)
        except InvalidOperationTypeError as error:
            # GraphQL over HTTP: a mutation asked for by GET is 405
            status = 405 if request.method == "GET" else 400
            raise HTTPException(status, error.as_http_error_reason(request.method)) from None
        except MissingQueryError:
            raise HTTPException(400, "No GraphQL query found in the request") from None
        finally:
            note_graphql_operation(request.scope, context)
        media_type = response_media_type(request.headers.get("accept"))
        sub_response.status_code = answer_status(result, media_type, sub_response.status_code)  # type: ignore[assignment]
        sub_response.media_type = media_type
        mark_unavailable(result, sub_response)  # a 503 when it failed whole on a transient failure
        return result

    async def process_result(self, request: Any, result: Any) -> Any:
        note_graphql_result(request.scope, result)
        body = await super().process_result(request, result)
        shape_body(body, result, response_media_type(request.headers.get("accept")))
        return body

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        response = Response(
            encode_json(response_data),  # bytes: not decoded to text only to be encoded again
            status_code=sub_response.status_code or 200,
            media_type=sub_response.media_type or JSON,
        )
        response.headers.raw.extend(sub_response.raw_headers)
        response.background = sub_response.background
        return response

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql_page()

    def encode_json(self, data: object) -> str:
        return encode_json(data).decode()  # WebSocket messages are text frames: a str

    def decode_json(self, data: str | bytes) -> object:
        return decode_json(data)

    async def get_sub_response(self, request: Any) -> Any:
        return SubResponse() if self.fast_paths else await super().get_sub_response(request)

    async def parse_http_body(self, request: Any) -> Any:
        """The stock parsing, with a JSON body that is neither an object nor a list refused
        as a bad request (the stock view fails on one with a 500). The common request (a
        JSON object) does not come here when the fast paths run (`answer`)."""
        content_type = request.content_type
        if request.method == "POST" and "application/json" in (content_type or ""):
            body = await request.get_body()
            if not is_json_container(body):
                self.parse_json(body)  # a body that is not JSON at all: the stock 400
                raise HTTPException(400, NOT_A_REQUEST)
        return await super().parse_http_body(request)

    async def on_ws_connect(self, context: Context) -> None:
        params = context.connection_params or {}
        header = params.get("authorization") or params.get("Authorization")
        try:
            context.principal = await authenticate(
                header if isinstance(header, str) else None, self.secret
            )
        except InvalidCredential as error:
            note_refusal(context.request.scope, error)
            raise ConnectionRejectionError() from None
        note_principal(context.request.scope, context.principal)


def _wants_ide(scope: Scope) -> bool:
    if scope["method"] != "GET":
        return False
    accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
    return "text/html" in accept


class AuthenticatedGraphQL:
    """HTTP in front of the GraphQL view: a request with a bad credential gets 401 with a
    GraphQL-shaped error body. One without a credential reaches the view unauthenticated:
    only exchangeTemporaryCode answers it, every other field gives 401 as well. GraphiQL
    (a browser GET) is served without one."""

    def __init__(self, view: UsageGraphQL) -> None:
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _wants_ide(scope):
            header = Request(scope).headers.get("authorization")
            if header is not None:
                try:
                    scope[PRINCIPAL_SCOPE_KEY] = await authenticate(header, self.view.secret)
                except InvalidCredential as error:
                    note_refusal(scope, error)
                    await _unauthenticated(error.message)(scope, receive, send)
                    return
                note_principal(scope, scope[PRINCIPAL_SCOPE_KEY])
        await self.view(scope, receive, send)


def _unauthenticated(message: str) -> Response:
    body = {"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})


async def _flush_key_use() -> None:
    try:
        await flush_key_use()
    except Exception:
        log.exception("API keys' last use not written at shutdown")


def _middleware(settings: Settings, request_log: RequestLogWriter) -> list[Middleware]:
    stack = []
    if settings.request_log_enabled:  # outermost: it logs every answer below it (429, 413)
        stack.append(Middleware(RequestLogMiddleware, sink=request_log))
    cors = cors_middleware(settings.allowed_origins)
    if cors is not None:  # outside the limits: a page can read a 429 or a 413 too
        stack.append(cors)
    if settings.rate_limit_per_second > 0:
        stack.append(
            Middleware(
                RateLimitMiddleware,
                per_second=settings.rate_limit_per_second,
                burst=settings.rate_limit_burst_size,
            )
        )
    return [
        *stack,
        Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        Middleware(TransientFailureMiddleware),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    migrate: bool | None = None,
    fast_websockets: bool | None = None,
) -> Starlette:
    """The service. `migrate` (default: on the embedded SQLite default) applies pending
    migrations at start-up; on PostgreSQL run `usagegraph migrate` as a deploy step.
    `fast_websockets`: see `UsageGraphQL`."""
    settings = settings or get_settings()
    apply = (not settings.is_postgres) if migrate is None else migrate
    realtime = Realtime.create(
        settings.redis_url,
        plain_postgres_dsn(settings.database_url) if settings.is_postgres else None,
    )
    metrics = Metrics()
    request_log = RequestLogWriter(
        secret=settings.secret,
        capacity=settings.request_log_queue,
        flush_seconds=settings.request_log_flush_seconds,
        broker=realtime.broker,
        metrics=metrics,
    )
    webhooks = WebhookDeliverer(settings, request_log)
    metrics.watch_webhooks(webhooks)
    metrics.watch(
        lambda: realtime.subscriber_count,
        lambda: request_log.dropped,
        lambda: len(request_log.pending),
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        configure_logging(settings.log_format, settings.log_level)
        if apply:
            await apply_migrations(settings)
            await close_database()
        await init_database(settings)
        await realtime.start()
        await request_log.start()
        jobs = JobRunner(default_jobs(settings) if settings.jobs_enabled else [])
        await jobs.start()
        if settings.jobs_enabled:
            await webhooks.start()
        # Everything loaded at start-up lives forever: keep it out of the cyclic collector,
        # and collect young objects less often (fewer pauses in the latency tail).
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        try:
            yield
        finally:
            await jobs.close()
            await webhooks.close()  # before the request log: its attempts are logged
            await _flush_key_use()  # the uses noted since the last flush
            await request_log.close()  # after the server stopped taking requests: all flushed
            await realtime.close()
            await close_database()

    view = UsageGraphQL(
        schema,
        allowed_origins=settings.allowed_origins,
        realtime=realtime,
        secret=settings.secret,
        public_url=settings.public_url,
        cost_budgets=settings.cost_budgets,
        fast_websockets=fast_websockets,
        webhooks_allow_private=settings.webhooks_allow_private,
    )
    app = Starlette(
        routes=[
            Route("/graphql", AuthenticatedGraphQL(view), methods=["GET", "POST"]),
            WebSocketRoute("/graphql", view),
            usage_page_route(),
            static_files(),
            export_route(settings),
            ingest_route(settings.secret, lambda: realtime.broker),
            *health_routes(metrics),
        ],
        middleware=_middleware(settings, request_log),
        lifespan=lifespan,
    )
    app.state.realtime = realtime  # started by the lifespan (or by a test that skips it)
    app.state.request_log = request_log  # likewise
    app.state.metrics = metrics
    app.state.webhooks = webhooks  # likewise
    return app


__all__ = ["create_app"]
