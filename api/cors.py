"""CORS for HTTP: browser pages on the origins of USAGEGRAPH_ALLOWED_ORIGINS (the same list
that admits their WebSockets) may call the API, e.g. a widget on a customer's site calling
`exchangeTemporaryCode`. None by default. Credentials travel in the Authorization header,
never in cookies: no `Access-Control-Allow-Credentials`."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from strawberry.http.websocket_origin import normalize_allowed_origins

ALLOWED_METHODS = ("GET", "POST")
ALLOWED_HEADERS = ("authorization", "content-type", "accept", "x-request-id")
# readable by the page: the request id to quote, how long to wait after a 429 or 503
EXPOSED_HEADERS = ("x-request-id", "retry-after")
PREFLIGHT_CACHE_SECONDS = 600


def cors_middleware(allowed_origins: list[str]) -> Middleware | None:
    """The middleware answering preflights and marking answers for the allowed origins
    (origins written as browsers send them: `https://Example.com:443` is
    `https://example.com`); None when no origin is allowed."""
    if not allowed_origins:
        return None
    return Middleware(
        CORSMiddleware,
        allow_origins=sorted(normalize_allowed_origins(allowed_origins)),
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_CACHE_SECONDS,
    )
