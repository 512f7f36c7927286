"""The request log middleware (docs/request-log.md): every HTTP request and WebSocket connection
leaves one record, whatever happens to it (unknown path, refused credential, malformed body, an
exception), with a request id echoed in `X-Request-Id`.

On the request path it only notes what it sees (the time, the status, the raw credential
header) in a `RequestDraft` (api/request_draft.py) that the authentication and the GraphQL
view fill in (the view: each operation's root fields and the application and End User they
name, noted while it ran), and hands the draft to the writer's bounded queue; the rest (the
End User's other id, which application a refused key belongs to) is worked out by the
writer, off the path."""

from __future__ import annotations

import json
import logging
import random
import re
import uuid
from time import perf_counter
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.logging_setup import REQUEST_ID
from api.request_draft import DRAFT_SCOPE_KEY, RequestDraft, draft_of
from models import clock
from models.access import Principal
from models.accounts import InvalidCredential
from models.request_log import MAX_MESSAGE, clip
from resolvers.context import Context
from resolvers.error_logging import code_of

log = logging.getLogger("usagegraph.request_log")

REQUEST_ID_HEADER = b"x-request-id"
# A client's request id is kept when it is short and plain (it goes into logs and headers).
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,64}")
_ERROR_BODY_LIMIT = 4_096  # bytes of an error response read for its message
# Codes for error responses that carry no code of their own.
_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    499: "CLIENT_CLOSED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
# WebSocket close codes before the connection was acknowledged, as HTTP statuses.
_CLOSE_STATUS = {4401: 401, 4403: 403, 1011: 500, 1013: 503, 4429: 429}
_INTERNAL_BODY = json.dumps(
    {"errors": [{"message": "Internal error.", "extensions": {"code": "INTERNAL"}}]}
).encode()


class DraftSink(Protocol):
    def offer(self, draft: RequestDraft) -> None: ...


def request_id_from(value: bytes | None) -> str:
    if value is not None:
        text = value.decode("latin-1")
        if _SANE_REQUEST_ID.fullmatch(text):
            return text
    # a random version-4 UUID from the process's generator: unique enough for a request
    # id, without uuid4's system call for 16 bytes of cryptographic randomness per request
    return uuid.UUID(int=random.getrandbits(128), version=4).hex


def _note_credential(
    scope: Scope, application_id: int | None, key_id: str | None
) -> RequestDraft | None:
    """The credential was checked in the request (the writer need not): what it names."""
    draft = draft_of(scope)
    if draft is not None:
        draft.principal_known = True
        draft.application_id = application_id
        draft.api_key_prefix = key_id
    return draft


def note_principal(scope: Scope, principal: Principal) -> None:
    """The credential was verified: who called."""
    draft = _note_credential(scope, principal.application_id, principal.key_id)
    if draft is not None:
        draft.organization_id = principal.organization_id
        draft.end_user_id = principal.end_user_id


def note_refusal(scope: Scope, error: InvalidCredential) -> None:
    """The credential was refused: the key id or token still names the application."""
    draft = _note_credential(scope, error.application_id, error.key_id)
    if draft is not None:
        draft.note_error(error.code, error.message)


def note_error(scope: Scope, code: str, message: str | None) -> None:
    draft = draft_of(scope)
    if draft is not None:
        draft.note_error(code, message)


def _error_from_body(status: int, content_type: bytes, body: bytes) -> tuple[str, str | None]:
    """(code, message) of an error response that noted none: a GraphQL-shaped JSON body's
    first error, else the text."""
    code = _STATUS_CODES.get(status, f"HTTP_{status}")
    text = body.decode("utf-8", "replace").strip()
    if b"json" in content_type:
        try:
            first = json.loads(body)["errors"][0]
            extensions = first.get("extensions") or {}
            return str(extensions.get("code") or code), str(first.get("message"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            pass
    return code, text or None


class RequestLogMiddleware:
    """ASGI middleware, outermost, so that it sees every answer (the body limit's, the rate
    limit's, a crash's)."""

    def __init__(self, app: ASGIApp, sink: DraftSink) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _open(self, scope: Scope, method: str) -> RequestDraft:
        request_id = authorization = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = value
            elif name == b"authorization":
                authorization = value
        draft = RequestDraft(clock.now(), method, scope["path"], request_id_from(request_id))
        draft.authorization = authorization
        # Not reset afterwards: the server's own lines about this request (its access log
        # line, an unhandled error) come after the app returns. Each request is served in
        # a task of its own, whose context this does not outlive.
        REQUEST_ID.set(draft.request_id)
        scope[DRAFT_SCOPE_KEY] = draft
        return draft

    def _close(self, scope: Scope, draft: RequestDraft, started: float) -> None:
        draft.latency_ms = (perf_counter() - started) * 1000.0
        route = scope.get("route")
        if route is not None:
            draft.route = getattr(route, "path", None)
        self.sink.offer(draft)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        draft = self._open(scope, scope["method"])
        id_header = (REQUEST_ID_HEADER, draft.request_id.encode())
        error_body: list[bytes] | None = None
        content_type = b""

        async def send_logged(message: Message) -> None:
            nonlocal error_body, content_type
            if message["type"] == "http.response.start":
                draft.status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append(id_header)
                message["headers"] = headers
                if draft.status >= 400 and draft.error_code is None:
                    error_body = []
                    for name, value in headers:
                        if name.lower() == b"content-type":
                            content_type = value
            elif error_body is not None and sum(map(len, error_body)) < _ERROR_BODY_LIMIT:
                error_body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        except Exception:
            log.exception("unhandled error in request %s", draft.request_id)
            draft.note_error("INTERNAL", "Internal error.")
            if draft.status == 0:
                draft.status = 500
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json"), id_header],
                    }
                )
                await send({"type": "http.response.body", "body": _INTERNAL_BODY})
            draft.status = max(draft.status, 500)
        finally:
            if draft.status == 0:
                draft.status = 499  # the client went away before an answer
            if draft.status >= 400 and draft.error_code is None:
                code, message = _error_from_body(
                    draft.status, content_type, b"".join(error_body or ())
                )
                draft.note_error(code, clip(message, MAX_MESSAGE))
            self._close(scope, draft, started)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One record per connection, written once it is acknowledged (101, OK) or refused
        (its close code as an HTTP status), with the time that took as its latency."""
        started = perf_counter()
        draft = self._open(scope, "WS")
        draft.websocket = True
        done = False

        def finish(status: int, reason: str | None = None) -> None:
            nonlocal done
            done = True
            draft.status = status
            if status >= 400:
                draft.note_error(_STATUS_CODES.get(status, f"HTTP_{status}"), reason)
            self._close(scope, draft, started)

        async def send_logged(message: Message) -> None:
            if not done:
                kind = message["type"]
                if kind == "websocket.send":
                    text = message.get("text")
                    if text is not None and '"connection_ack"' in text:
                        finish(101)
                elif kind == "websocket.close":
                    code = message.get("code", 1000)
                    status = _CLOSE_STATUS.get(code, 400 if 4000 <= code < 5000 else 499)
                    finish(status, f"closed {code} {message.get('reason') or ''}".strip())
                elif kind == "websocket.http.response.start":
                    finish(message["status"], "WebSocket handshake refused")
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        except Exception:
            if not done:
                finish(500, "Internal error.")
            raise
        finally:
            if not done:
                finish(499, "the client left before the connection was acknowledged")


def note_graphql_operation(scope: Scope, context: Context) -> None:
    """What an operation of the request noted on its context while it ran (the operation,
    the application a request without a credential concerned), moved to the draft."""
    draft = draft_of(scope)
    operation, context.operation = context.operation, None
    if draft is None:
        return
    if operation is not None:
        draft.operations.append(operation)
    if draft.application_id is None and context.noted_application_id is not None:
        draft.application_id = context.noted_application_id


def note_graphql_result(scope: Scope, result: Any) -> None:
    """The first error of a GraphQL answer: a top-level error, else a typed error in a
    mutation payload (`errors`, when the client selected it)."""
    draft = draft_of(scope)
    if draft is None or draft.error_code is not None:
        return
    if result.errors:
        first = result.errors[0]
        draft.note_error(code_of(first), first.message)
        return
    for value in (result.data or {}).values():
        if isinstance(value, dict):
            errors = value.get("errors")
            if errors and isinstance(errors[0], dict) and errors[0].get("code"):
                draft.note_error(str(errors[0]["code"]), errors[0].get("message"))
                return
