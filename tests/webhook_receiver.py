"""A webhook receiver as an integrator would run one, for the webhook tests and the bench: a
real HTTP server on loopback that verifies each message's signature with the
`standardwebhooks` library, can fail a message's first attempts (HTTP 500) or answer some
too late, and keeps what it accepted, in arrival order, per endpoint path."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.requests import Request

from tests.applications import App
from tests.conftest import on_loopback
from tests.graphql_client import CREATE_WEBHOOK


@dataclass
class Received:
    message_id: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Receiver:
    """`secrets[path]`: the secrets a path's messages must verify with (any one). A message
    answers 500 to its first `fail_first` attempts; with `slow_attempt` n, its n-th attempt
    answers only after `slow_seconds` (past the deliverer's timeout). Only messages whose
    number (`msg_<n>`) is a multiple of `troubled_every` are treated so."""

    secrets: dict[str, list[str]] = field(default_factory=dict)
    fail_first: int = 0
    slow_attempt: int | None = None
    slow_seconds: float = 0.0
    troubled_every: int = 1
    url: str = ""
    attempts: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    unverified: list[tuple[str, str]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def endpoint_url(self, path: str) -> str:
        return f"{self.url}/{path}"

    def unique(self, path: str) -> list[Received]:
        """What the path accepted, each message once (the first time), in arrival order."""
        seen: set[str] = set()
        found = []
        for item in self.accepted[path]:
            if item.message_id not in seen:
                seen.add(item.message_id)
                found.append(item)
        return found

    async def wait_for(self, path: str, count: int, within: float = 20.0) -> list[Received]:
        """The path's unique messages once there are `count` of them."""
        deadline = asyncio.get_running_loop().time() + within
        while len(self.unique(path)) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, f"{len(self.unique(path))} of {count} messages arrived"
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), min(remaining, 0.5))
        return self.unique(path)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await Request(scope, receive).body()
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        path = scope["path"].strip("/")
        status = self._verify(path, body, headers)
        if status == 200:
            message_id = headers["webhook-id"]
            self.attempts[message_id] += 1
            attempt = self.attempts[message_id]
            troubled = int(message_id.removeprefix("msg_")) % self.troubled_every == 0
            if troubled and attempt <= self.fail_first:
                status = 500
            elif troubled and attempt == self.slow_attempt:
                await asyncio.sleep(self.slow_seconds)
            if status == 200:
                self.accepted[path].append(Received(message_id, json.loads(body), headers))
                self.arrived.set()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def _verify(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        for secret in self.secrets.get(path, []):
            try:
                Webhook(secret).verify(body, headers)
                return 200
            except WebhookVerificationError:
                continue
        self.unverified.append((path, headers.get("webhook-id", "")))
        return 401


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    """Serves the receiver on a free loopback port of this process."""
    async with on_loopback(receiver) as url:
        receiver.url = url
        yield receiver


async def subscribe(app: App, receiver: Receiver, path: str, events: list[str]) -> dict:
    """A new endpoint of the application to the receiver's `path`, its secret known there."""
    made = await app.admin(
        CREATE_WEBHOOK,
        input={"applicationId": app.id, "url": receiver.endpoint_url(path), "events": events},
    )
    payload = made["createWebhookEndpoint"]
    assert payload["errors"] == [], payload
    assert payload["secret"].startswith("whsec_")
    receiver.secrets[path] = [payload["secret"]]
    return payload["endpoint"] | {"secret": payload["secret"]}
