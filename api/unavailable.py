"""Transient failures of the database or the broker over HTTP (models/transient.py): a
request that failed whole because of one is answered 503 with `Retry-After`, which clients
and load balancers know to retry; a mutation retried with the same idempotency key is
applied at most once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from graphql import ExecutionResult
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.error_response import send_graphql_error
from models.transient import RETRY_AFTER_SECONDS, is_transient
from resolvers.errors import UNAVAILABLE, UNAVAILABLE_MESSAGE

RETRY_AFTER = str(RETRY_AFTER_SECONDS)


def failed_whole_unavailable(result: ExecutionResult) -> bool:
    """A GraphQL result with an UNAVAILABLE error (masked already) and no result beside it:
    no data, or only null top-level fields."""
    errors = result.errors or ()
    if not any((error.extensions or {}).get("code") == UNAVAILABLE for error in errors):
        return False
    return result.data is None or all(value is None for value in result.data.values())


def mark_unavailable(result: ExecutionResult, sub_response: Response) -> None:
    """Makes the HTTP answer of a request that failed whole on a transient failure a 503."""
    if failed_whole_unavailable(result):
        sub_response.status_code = 503
        sub_response.headers["Retry-After"] = RETRY_AFTER


Endpoint = Callable[..., Awaitable[Response]]  # (request) or (self, request)


def unavailable_as(
    error_response: Callable[[int, str, str], Response],
) -> Callable[[Endpoint], Endpoint]:
    """A REST endpoint's transient failure answered in that route's own error shape
    (`error_response(status, code, message)`): 503 UNAVAILABLE with Retry-After."""

    def decorate(endpoint: Endpoint) -> Endpoint:
        @wraps(endpoint)
        async def answered(*arguments: Any) -> Response:
            try:
                return await endpoint(*arguments)
            except Exception as error:
                if not is_transient(error):
                    raise
                response = error_response(503, UNAVAILABLE, UNAVAILABLE_MESSAGE)
                response.headers["Retry-After"] = RETRY_AFTER
                return response

        return answered

    return decorate


class TransientFailureMiddleware:
    """An HTTP request whose handler raised a transient failure before answering (the
    API-key lookup in front of GraphQL) is answered 503 UNAVAILABLE with Retry-After
    instead of 500, GraphQL-shaped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_noted(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noted)
        except Exception as error:
            if started or not is_transient(error):
                raise
            await send_graphql_error(
                send,
                503,
                UNAVAILABLE,
                UNAVAILABLE_MESSAGE,
                headers=[(b"retry-after", RETRY_AFTER.encode())],
            )
