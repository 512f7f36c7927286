"""`usagegraph serve --demo`, run as a real process on a fresh database (SQLite and
PostgreSQL), then read over HTTP and in its database: 60 days that look real."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import _drop_postgres_database, _postgres_database
from tests.demo_server import DemoServer, demo_server, usagegraph


@dataclass
class Served:
    demo: DemoServer

    @property
    def key(self) -> str:
        return self.demo.key

    @property
    def application_id(self) -> str:
        return self.demo.application_id

    def graphql(
        self, query: str, variables: dict[str, Any] | None = None, key: str = ""
    ) -> httpx.Response:
        return httpx.post(
            f"{self.demo.url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=30,
        )


@dataclass
class DemoDatabase:
    name: str
    url: str
    env: dict[str, str]
    cwd: Path

    def rows(self, statement: str) -> list[tuple[Any, ...]]:
        if self.name == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite://")) as db:
                return db.execute(statement).fetchall()

        async def fetch() -> list[tuple[Any, ...]]:
            connection = await asyncpg.connect(self.url.replace("postgres://", "postgresql://"))
            try:
                return [tuple(row) for row in await connection.fetch(statement)]
            finally:
                await connection.close()

        return asyncio.run(fetch())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def demo_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoDatabase]:
    cwd = tmp_path_factory.mktemp("demo")
    if request.param == "sqlite":
        url = f"sqlite://{cwd / 'demo.sqlite3'}"
    else:
        created = asyncio.run(_postgres_database())
        if created is None:
            pytest.skip("PostgreSQL is not reachable")
        url = created
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("REDIS_URL", None)
    if request.param == "postgres":
        subprocess.run(usagegraph("migrate"), env=env, cwd=cwd, check=True, timeout=120)
    try:
        yield DemoDatabase(request.param, url, env, cwd)
    finally:
        if request.param == "postgres":
            asyncio.run(_drop_postgres_database(url))


@pytest.fixture(scope="module")
def served(demo_database: DemoDatabase) -> Iterator[Served]:
    with demo_server(demo_database.cwd, database_url=demo_database.url) as demo:
        yield Served(demo)


def _as_time(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC)


def test_serve_demo_prints_a_working_key(served: Served) -> None:
    """The README's first command: the key it prints answers over HTTP and WebSocket."""
    query = "{ applications { pools { key purchased used } endUsers { totalCount } } }"
    response = served.graphql(query)
    [application] = response.json()["data"]["applications"]
    assert application["endUsers"]["totalCount"] == 90
    assert {p["key"] for p in application["pools"]} == {"ai", "inbox_preview"}
    assert all(p["purchased"] > 0 and p["used"] > 0 for p in application["pools"])
    asyncio.run(_websocket_handshake(served.demo.port, served.key))


async def _websocket_handshake(port: int, key: str) -> None:
    """The served app accepts graphql-transport-ws without permessage-deflate even when the
    client offers it (USAGEGRAPH_WS_COMPRESSION is off by default: zlib state per idle
    subscriber)."""
    from websockets.asyncio.client import connect

    async with connect(
        f"ws://127.0.0.1:{port}/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        compression="deflate",
    ) as socket:
        assert socket.response is not None
        assert "sec-websocket-extensions" not in socket.response.headers
        await socket.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}})
        )
        assert json.loads(await socket.recv())["type"] == "connection_ack"


def test_the_ledger_is_booked_over_60_days_in_order(
    demo_database: DemoDatabase, served: Served
) -> None:
    entries = demo_database.rows(
        "SELECT id, kind, lot_id, created_at, occurred_at FROM ledger_entry ORDER BY id"
    )
    created = [_as_time(row[3]) for row in entries]
    assert created == sorted(created), "entries are booked in time order"
    now = datetime.now(UTC)
    assert now - created[0] > timedelta(days=59)
    assert {row[1] for row in entries} == {"PURCHASE", "ALLOCATE", "CONSUME", "EXPIRE", "RELEASE"}
    purchased_at = {row[2]: _as_time(row[3]) for row in entries if row[1] == "PURCHASE"}
    for _, kind, lot, booked, occurred in entries:
        assert purchased_at[lot] <= _as_time(booked), "credits are bought before they are used"
        if kind == "CONSUME":  # reported in batches a few hours after the use
            assert timedelta(0) <= _as_time(booked) - _as_time(occurred) < timedelta(hours=9)
    days_with_use = {
        booked.date() for row, booked in zip(entries, created, strict=True) if row[1] == "CONSUME"
    }
    assert len(days_with_use) > 50
    verify = subprocess.run(
        usagegraph("verify"),
        env=demo_database.env,
        cwd=demo_database.cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stderr


SERIES = """
query Series($app: ID!, $from: DateTime!, $to: DateTime!, $granularity: Granularity!) {
  application(id: $app) {
    consumption(from: $from, to: $to, granularity: $granularity) { buckets { remaining } }
    pools {
      key remaining
      consumption(from: $from, to: $to, granularity: $granularity) {
        buckets { start used purchased expired remaining spike }
      }
    }
  }
}
"""


def test_no_series_runs_negative_and_one_shows_a_spike(served: Served) -> None:
    now = datetime.now(UTC)
    spikes = 0
    for granularity, days in (("DAY", 62), ("WEEK", 70), ("HOUR", 10)):
        variables = {
            "app": served.application_id,
            "from": (now - timedelta(days=days)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat(),
            "granularity": granularity,
        }
        answer = served.graphql(SERIES, variables).json()
        assert "errors" not in answer, answer
        application = answer["data"]["application"]
        assert all(b["remaining"] >= 0 for b in application["consumption"]["buckets"])
        for pool in application["pools"]:
            buckets = pool["consumption"]["buckets"]
            assert all(b["remaining"] >= 0 for b in buckets), (pool["key"], granularity)
            assert buckets[-1]["remaining"] == pool["remaining"]
            if granularity == "DAY":
                assert sum(b["purchased"] > 0 for b in buckets) >= 2, "packs bought over time"
                used = [b["used"] for b in buckets]
                assert sum(u > 0 for u in used) > 50, "used on most days"
                spikes += sum(b["spike"] for b in buckets)
                if pool["key"] == "ai":
                    assert max(used) > 3 * statistics.median(used)
                    assert sum(b["expired"] for b in buckets) > 0, "the launch bonus expired"
    assert spikes >= 1


def test_past_billing_periods_are_closed(served: Served) -> None:
    answer = served.graphql(
        "query P($app: ID!) { application(id: $app) { createdAt billingPeriods(first: 6) {"
        " start end status closedAt pools { pool openingRemaining purchased used"
        " closingRemaining } } } }",
        {"app": served.application_id},
    ).json()
    application = answer["data"]["application"]
    periods = application["billingPeriods"]
    assert len(periods) >= 3  # 60 days span at least three calendar months
    current, *past = periods
    assert current["status"] == "OPEN"
    for period in past:
        assert period["status"] == "CLOSED"
        assert _as_time(period["end"]) <= _as_time(period["closedAt"])
        assert _as_time(period["closedAt"]) - _as_time(period["end"]) < timedelta(hours=1)
    assert _as_time(application["createdAt"]) <= _as_time(past[-1]["start"]) + timedelta(days=31)
    assert any(pool["used"] > 0 for period in past for pool in period["pools"])
    for newer, older in pairwise(periods):
        closing = {pool["pool"]: pool["closingRemaining"] for pool in older["pools"]}
        for pool in newer["pools"]:
            assert pool["openingRemaining"] == closing.get(pool["pool"], 0)
            assert pool["closingRemaining"] >= 0


def test_end_users_in_every_state(served: Served) -> None:
    counts = {}
    for pool in ("ai", "inbox_preview"):
        for status in ("OK", "LOW", "EXHAUSTED", "NO_ALLOCATION"):
            answer = served.graphql(
                "query U($app: ID!, $filter: EndUserFilter!) { application(id: $app) {"
                " endUsers(first: 1, filter: $filter) { totalCount } } }",
                {"app": served.application_id, "filter": {"pool": pool, "status": [status]}},
            ).json()
            counts[pool, status] = answer["data"]["application"]["endUsers"]["totalCount"]
    assert all(counts["ai", status] > 0 for status in ("OK", "LOW", "EXHAUSTED", "NO_ALLOCATION"))
    assert counts["inbox_preview", "NO_ALLOCATION"] > counts["ai", "NO_ALLOCATION"]
    balances = served.graphql(
        "query B($app: ID!) { application(id: $app) { endUsers(first: 100) {"
        " edges { node { balances { remaining } } } } } }",
        {"app": served.application_id},
    ).json()
    nodes = [edge["node"] for edge in balances["data"]["application"]["endUsers"]["edges"]]
    assert all(b["remaining"] >= 0 for node in nodes for b in node["balances"])


def test_the_request_log_holds_the_failures_to_troubleshoot(served: Served) -> None:
    answer = served.graphql(
        "query L($app: ID!) { application(id: $app) { requestLog(first: 500) {"
        " edges { node { time endpoint status outcome errorCode apiKeyPrefix } } } } }",
        {"app": served.application_id},
    ).json()
    entries = [edge["node"] for edge in answer["data"]["application"]["requestLog"]["edges"]]
    kinds = {(e["status"], e["outcome"], e["errorCode"]) for e in entries}
    assert (404, "CLIENT_ERROR", "NOT_FOUND") in kinds  # a wrong path
    assert (401, "AUTH_ERROR", "UNAUTHENTICATED") in kinds  # a wrong key
    assert (401, "AUTH_ERROR", "TOKEN_EXPIRED") in kinds  # an expired End User token
    assert any(  # a temporary code used twice
        e["errorCode"] == "EXPIRED" and "exchangeTemporaryCode" in e["endpoint"] for e in entries
    )
    assert any(e["errorCode"] == "INSUFFICIENT_CREDITS" for e in entries)
    assert sum(e["outcome"] == "OK" for e in entries) > len(entries) / 2
    times = [_as_time(e["time"]) for e in entries]
    assert max(times) - min(times) > timedelta(days=7), "spread over the last days"


def test_serving_the_demo_again_revokes_the_previous_demo_key(
    demo_database: DemoDatabase, served: Served
) -> None:
    with demo_server(demo_database.cwd, database_url=demo_database.url) as demo:
        again = Served(demo)
        assert again.key != served.key and again.application_id == served.application_id
        refused = again.graphql("{ viewer { role } }", key=served.key)
        assert refused.status_code == 401
        assert "revoked" in refused.json()["errors"][0]["message"]
        keys = again.graphql(
            "query K($app: ID!) { application(id: $app) { apiKeys {"
            " keyId name role revokedAt lastUsedAt } } }",
            {"app": again.application_id},
        ).json()["data"]["application"]["apiKeys"]
    demo_keys = {key["keyId"]: key for key in keys if key["name"] == "demo key"}
    assert demo_keys[served.key.split("_")[1]]["revokedAt"] is not None
    live = [key for key in demo_keys.values() if key["revokedAt"] is None]
    assert [key["keyId"] for key in live] == [again.key.split("_")[1]]
    assert all(key["role"] == "ADMIN" for key in demo_keys.values())
    [backend] = [key for key in keys if key["name"] == "Acme backend (production)"]
    assert backend["revokedAt"] is None
    last_used = _as_time(backend["lastUsedAt"])  # the integrator's requests of the last days
    assert datetime.now(UTC) - timedelta(days=3) < last_used < datetime.now(UTC)
