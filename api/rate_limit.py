"""A per-credential rate limit: a token bucket per API key id (per End User token, or per
client address without a credential), answering `429` with `Retry-After` and a
GraphQL-shaped error, logged as CLIENT_ERROR / RATE_LIMITED.

The buckets live in each process: with N processes behind a balancer a key gets up to N
times the rate (set the rate per process accordingly). That keeps the check to a few
arithmetic operations on the request path; a shared bucket would cost a Redis round trip
per request."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from starlette.types import ASGIApp, Receive, Scope, Send

from api.error_response import send_graphql_error
from api.request_log import note_error
from models.accounts import split_key

MAX_BUCKETS = 100_000
# Probes and scrapes are never limited.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_MESSAGE = "rate limit exceeded: retry after {seconds} s"


class TokenBuckets:
    """`rate` tokens a second up to `burst` per key; `take` answers 0 when a token was
    taken, else the seconds until one is available."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.buckets: OrderedDict[str, list[float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = [self.burst, now]
            self.buckets[key] = bucket
            if len(self.buckets) > MAX_BUCKETS:
                self.buckets.popitem(last=False)  # the least recently created
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate


def limit_key(scope: Scope) -> str:
    """The key id of an API key, the signature part of a token (or the end of any other
    credential), else the client address. Each is short: a bucket's key is bounded."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            credential = value.rpartition(b" ")[2].decode("latin-1")
            parts = split_key(credential)
            if parts is not None:
                return "key:" + parts[0]
            return "cred:" + credential[-32:]
    client = scope.get("client")
    return "addr:" + (client[0] if client else "?")


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, per_second: float, burst: int) -> None:
        self.app = app
        self.buckets = TokenBuckets(per_second, burst)
        self.limited = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(limit_key(scope))
        if wait == 0.0:
            await self.app(scope, receive, send)
            return
        self.limited += 1
        seconds = max(1, math.ceil(wait))
        message = _MESSAGE.format(seconds=seconds)
        note_error(scope, "RATE_LIMITED", message)
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 4429, "reason": "rate limited"})
            return
        await send_graphql_error(
            send,
            429,
            "RATE_LIMITED",
            message,
            headers=[(b"retry-after", str(seconds).encode())],
        )
