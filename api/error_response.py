"""The one shape of an error answered by ASGI middleware, before GraphQL runs: a
GraphQL-shaped JSON body (`{"errors": [{"message", "extensions": {"code", ...}}]}`), so
a client reads every refusal the same way."""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import Send


async def send_graphql_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    extensions: dict[str, object] | None = None,
) -> None:
    """Answers `status` with one GraphQL-shaped error carrying `code`."""
    error = {"message": message, "extensions": {"code": code, **(extensions or {})}}
    body = json.dumps({"errors": [error]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
