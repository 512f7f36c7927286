"""Webhooks across two server processes on one PostgreSQL and one Redis, one of them
SIGKILLed mid-burst: every committed event reaches a real receiver (which fails, times out
and verifies signatures) exactly once after deduplication by `webhook-id`, in order per
endpoint; a refused (rolled-back) change sends nothing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from api.database import plain_postgres_dsn
from tests.applications import book, keyed_application
from tests.conftest import REDIS_TEST_URL, Backend
from tests.graphql_client import ALLOCATE, Caller
from tests.processes import Cluster, Entry, cluster_database, start_server
from tests.webhook_receiver import Receiver, receiving, subscribe

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

# Troubled messages are retried one after the other per endpoint: short timeouts and delays.
SETTINGS = {
    "USAGEGRAPH_WEBHOOKS_ALLOW_PRIVATE": "1",
    "USAGEGRAPH_WEBHOOK_TIMEOUT_SECONDS": "0.2",
    "USAGEGRAPH_WEBHOOK_RETRY_FIRST_SECONDS": "0.02",
    "USAGEGRAPH_WEBHOOK_RETRY_MAX_SECONDS": "0.08",
    "USAGEGRAPH_WEBHOOK_POLL_SECONDS": "0.05",
    "USAGEGRAPH_LOG_LEVEL": "WARNING",
}
USERS = 5
# Enough for the kill to land mid-burst with eight allocations in flight, for refusals
# after it, and for several troubled messages on each side of it.
BURST = 60


@pytest.fixture
async def cluster(backend: Backend) -> AsyncIterator[Cluster]:
    async with cluster_database() as made:
        yield made


async def test_every_committed_event_arrives_once_in_order_across_a_killed_process(
    cluster,
) -> None:
    receiver = Receiver(fail_first=1, slow_attempt=2, slow_seconds=0.3, troubled_every=7)
    first = second = None
    async with receiving(receiver), httpx.AsyncClient(timeout=30) as http:
        try:
            first = start_server(cluster, REDIS_TEST_URL, env=SETTINGS)  # leads the relay
            second = start_server(cluster, REDIS_TEST_URL, env=SETTINGS)
            app = await keyed_application(Entry(first.graphql, cluster.organization_key), http)
            admin_key = app.admin.key
            for path in ("all", "also"):
                await subscribe(app, receiver, path, ["ALLOCATION_CHANGED"])
            users = await book(app, users=USERS, credits=450, each=0)
            servers = [first, second]
            killed = asyncio.Event()
            random.seed(7)
            sizes = [random.randint(1, 20) for _ in range(BURST)]  # ~630 asked, 450 there

            async def allocate(i: int) -> dict:
                """Sent to either process; once the first is killed, to the second, again
                with the same idempotency key (a commit whose answer was lost replays)."""
                variables = {
                    "applicationId": app.id,
                    "endUser": {"id": users[i % USERS]},
                    "pool": "ai",
                    "credits": sizes[i],
                    "idempotencyKey": f"burst-{i}",
                }
                target = servers[i % 2]
                for _ in range(20):
                    if killed.is_set():
                        target = second
                    try:
                        answer = await Caller(http, target.graphql, admin_key)(
                            ALLOCATE, input=variables
                        )
                        return answer["allocateCredits"]
                    except (httpx.TransportError, AssertionError):
                        target = second
                        await asyncio.sleep(0.1)
                raise AssertionError(f"allocation {i} never answered")

            limit = asyncio.Semaphore(8)

            async def limited(i: int) -> dict:
                async with limit:
                    if i == BURST // 2:
                        first.kill()  # mid-burst: the relay's leader, with leases held
                        killed.set()
                    return await allocate(i)

            answers = await asyncio.gather(*(limited(i) for i in range(BURST)))
            committed = {
                (users[i % USERS], a["balance"]["allocated"])
                for i, a in enumerate(answers)
                if not a["errors"]
            }
            refused = [a for a in answers if a["errors"]]
            assert refused and all(
                a["errors"][0]["code"] == "INSUFFICIENT_CREDITS" for a in refused
            )
            assert len(committed) == BURST - len(refused)

            for path in ("all", "also"):
                got = await receiver.wait_for(path, len(committed), within=120)
                ids = [int(m.message_id.removeprefix("msg_")) for m in got]
                assert ids == sorted(ids), f"{path}: out of order"
                seen = {(m.body["data"]["endUser"]["id"], m.body["data"]["allocated"]) for m in got}
                assert seen == committed, path
            await asyncio.sleep(1.0)  # nothing more arrives: no message for a refused change
            assert [len(receiver.unique(p)) for p in ("all", "also")] == [len(committed)] * 2
            assert receiver.unverified == []
            # late answers were accepted and sent again: the receiver deduplicated them
            assert len(receiver.accepted["all"]) > len(receiver.unique("all"))

            database = await asyncpg.connect(plain_postgres_dsn(cluster.database_url))
            try:
                for _ in range(100):
                    left = await database.fetchval(
                        "SELECT count(*) FROM webhook_message WHERE status <> 'DELIVERED'"
                    )
                    if left == 0:
                        break
                    await asyncio.sleep(0.2)
                assert left == 0
                assert await database.fetchval("SELECT count(*) FROM webhook_message") == (
                    2 * len(committed)
                )
            finally:
                await database.close()
        finally:
            for process in (first, second):
                if process is not None:
                    process.stop()
