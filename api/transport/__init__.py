"""The transports: GraphQL over `graphql-transport-ws` and legacy `graphql-ws`, with live
subscriptions sent from the process's fan-out (rendered once per selection,
subscriptions/fanout.py) instead of executed per subscriber; and the common JSON request
over HTTP read directly (json_request.py).

This package is a fence, like `resolvers/runtime/`: it subclasses Strawberry's protocol
handlers and copies some of their methods, and it was verified against strawberry-graphql
0.341.2 and graphql-core 3.3.2 (`resolvers.runtime.versions.VERIFIED`). The view serves
WebSockets through it only when `fast_paths_enabled()`; otherwise Strawberry's stock
handlers answer, with the same subscriptions and events (each executed per subscriber)."""

from __future__ import annotations

from starlette.websockets import WebSocket

from api.transport.handlers import (
    LiveGraphQLWSHandler,
    LiveTransportWSHandler,
    connection_handler,
)

__all__ = ["LiveGraphQLWSHandler", "LiveTransportWSHandler", "serve_websocket"]


async def serve_websocket(view: object, request: WebSocket) -> None:
    """One WebSocket connection, from its handshake to its close."""
    handler = await connection_handler(view, request)
    if handler is not None:
        await handler.handle()
