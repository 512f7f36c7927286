"""The demo's request log: real requests to the app, in this process, booked over the last
days (`models.clock.booked_at`), so the request log middleware and writer record them as
they record any request: the integrator's everyday calls and the failures the Usage page
exists to troubleshoot (a wrong path, a wrong key, an expired End User token, a temporary
code used twice, a use that does not fit)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from api.app import create_app
from api.settings import Settings
from models.api_key_use import flush_key_use
from models.clock import booked_at

REQUEST_DAYS = 10  # within the request log's retention
BALANCES = (
    "query PoolBalances($app: ID!) { application(id: $app) {"
    " pools { key remaining unallocated } } }"
)
CONSUME = (
    "mutation Consume($input: ConsumeCreditsInput!) { consumeCredits(input: $input) {"
    " balance { remaining status } errors { code message } } }"
)
TOKEN = (
    "mutation Token($input: IssueEndUserTokenInput!) { issueEndUserToken(input: $input) {"
    " token errors { code } } }"
)
CODE = (
    "mutation Code($input: IssueEndUserTokenInput!) { createTemporaryCode(input: $input) {"
    " code errors { code } } }"
)
EXCHANGE = (
    "mutation Exchange($code: String!) { exchangeTemporaryCode(code: $code) {"
    " token errors { code message } } }"
)
MY_BALANCES = "query MyBalances { viewer { endUser { externalId balances { remaining } } } }"


class _Integrator:
    """The integrator's backend (and its widget) calling the app."""

    def __init__(self, client: httpx.AsyncClient, app: int, key: str) -> None:
        self.client = client
        self.app = app
        self.key = key

    async def graphql(
        self, query: str, variables: dict[str, Any] | None = None, credential: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        return response.json()

    async def balances(self) -> None:
        await self.graphql(BALANCES, {"app": str(self.app)}, self.key)

    async def consume_beyond_balance(self) -> None:
        """A trial End User (no credits) tries an AI generation: INSUFFICIENT_CREDITS."""
        user = {"externalId": "customer-000"}
        payload = {"applicationId": str(self.app), "endUser": user, "pool": "ai"}
        await self.graphql(
            CONSUME, {"input": {**payload, "credits": 3, "feature": "ai_generation"}}, self.key
        )

    async def wrong_path(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        await self.client.post("/graphq", json={"query": BALANCES}, headers=headers)

    async def wrong_key(self) -> None:
        key_id = self.key.split("_")[1]
        await self.graphql(BALANCES, {"app": str(self.app)}, f"ug_{key_id}_{'x' * 43}")

    async def token(self, external_id: str, ttl: int) -> str:
        issued = await self.graphql(TOKEN, self._for(external_id, ttl), self.key)
        return issued["data"]["issueEndUserToken"]["token"]

    async def code_exchanged_twice(self, external_id: str) -> None:
        created = await self.graphql(CODE, self._for(external_id, 900), self.key)
        code = created["data"]["createTemporaryCode"]["code"]
        for _ in range(2):  # the widget retries with a code already spent
            await self.graphql(EXCHANGE, {"code": code})

    def _for(self, external_id: str, ttl: int) -> dict[str, Any]:
        end_user = {"externalId": external_id}
        return {"input": {"applicationId": str(self.app), "endUser": end_user, "ttlSeconds": ttl}}


async def book_requests(
    settings: Settings, app: int, key: str, now: datetime, rng: random.Random
) -> None:
    """A few days of requests, each booked at its moment, written by the request log."""
    service = create_app(settings, migrate=False)
    writer = service.state.request_log
    await writer.start()
    transport = httpx.ASGITransport(app=service)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            integrator = _Integrator(client, app, key)
            for moment, request in _schedule(integrator, now, rng):
                with booked_at(moment):
                    await request()
    finally:
        await writer.close()  # everything queued is written
    await flush_key_use()  # the keys' last use, as the server's job would write it


def _schedule(
    integrator: _Integrator, now: datetime, rng: random.Random
) -> list[tuple[datetime, Callable[[], Awaitable[object]]]]:
    start = now - timedelta(days=REQUEST_DAYS)
    schedule: list[tuple[datetime, Callable[[], Awaitable[object]]]] = []
    for day in range(REQUEST_DAYS):
        for _ in range(rng.randint(2, 5)):
            moment = start + timedelta(days=day, minutes=rng.randint(8 * 60, 20 * 60))
            schedule.append((moment, integrator.balances))
    failures: list[tuple[float, Callable[[], Awaitable[object]]]] = [
        (1.4, integrator.wrong_path),
        (2.6, integrator.wrong_key),
        (3.5, integrator.consume_beyond_balance),
        (5.4, integrator.wrong_path),
        (6.6, lambda: integrator.code_exchanged_twice("customer-042")),
        (7.5, integrator.wrong_key),
        (8.4, lambda: integrator.code_exchanged_twice("customer-017")),
    ]
    schedule += [(start + timedelta(days=days), request) for days, request in failures]
    token_issued = start + timedelta(days=4.4)
    token: list[str] = []

    async def issue() -> None:
        token.append(await integrator.token("customer-042", 300))

    async def use_expired() -> None:  # a browser tab left open past the token's lifetime
        await integrator.graphql(MY_BALANCES, credential=token[0])

    schedule.append((token_issued, issue))
    schedule.append(
        (
            token_issued + timedelta(minutes=2),
            lambda: integrator.graphql(MY_BALANCES, credential=token[0]),
        )
    )
    schedule.append((token_issued + timedelta(minutes=40), use_expired))
    return sorted(schedule, key=lambda item: item[0])
