"""A bound on HTTP request bodies (docs/api.md#limits), refused before the body is read.

A declared `Content-Length` over the limit is answered at once, before any of the body is
read; the server then discards the declared bytes as they arrive (never buffering them), so
that a client which sends its whole body before reading still gets the 413. A body sent
without a length (chunked) is counted as it streams and refused as soon as it passes the
limit, closing the connection: its end is unknown, so it is not read any further. Nothing
is buffered here: the application reads the body as usual."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.error_response import send_graphql_error

PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"


class _BodyTooLarge(Exception):
    """Raised from `receive` to unwind the application once the body passes the limit."""


class BodySizeLimit:
    """ASGI middleware: HTTP bodies larger than `max_bytes` get 413 with a GraphQL-shaped
    error."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, close=False)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if started:  # the application answered before reading it all: nothing to add
                return
            await self._refuse(send, close=declared is None)

    async def _refuse(self, send: Send, *, close: bool) -> None:
        await send_graphql_error(
            send,
            413,
            PAYLOAD_TOO_LARGE,
            f"request body larger than {self.max_bytes} bytes",
            headers=[(b"connection", b"close")] if close else [],
            extensions={"maxBytes": self.max_bytes},
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
