"""Several server processes on one PostgreSQL and one Redis (docs/operations.md#several-processes):
events cross processes, survive a killed process, and survive a Redis restart."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from api.database import plain_postgres_dsn
from tests.applications import application, consume_input
from tests.conftest import Backend
from tests.graphql_client import CONSUME, Caller
from tests.processes import Cluster, Entry, cluster_database, free_port, start_server
from tests.subscribing import next_event, subscribed

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


@pytest.fixture
async def cluster(backend: Backend) -> AsyncIterator[Cluster]:
    async with cluster_database() as made:
        yield made


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Redis of this test's own, which it may stop and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed")
    port = free_port()
    yield f"redis://127.0.0.1:{port}/0", Path(binary)


def _start_redis(url: str, binary: Path) -> subprocess.Popen:
    port = url.rsplit(":", 1)[1].split("/")[0]
    popen = subprocess.Popen(
        [str(binary), "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=1):
                return popen
        except OSError:
            assert time.monotonic() < deadline, "redis did not come up"
            time.sleep(0.05)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def test_an_event_crosses_processes_and_survives_a_killed_leader(
    cluster, http, redis_server
) -> None:
    redis_url, binary = redis_server
    redis_process = _start_redis(redis_url, binary)
    first = second = None
    try:
        first = start_server(cluster, redis_url)  # started first: it relays the outbox
        await asyncio.sleep(1.0)
        second = start_server(cluster, redis_url)
        app = await application(
            Entry(first.graphql, cluster.organization_key), http, users=2, credits_each=50
        )
        on_first = Caller(http, first.graphql, app.admin.key)
        user = app.end_user_ids[0]
        async with subscribed(
            second.graphql, app.reader.key, app=app.id, endUser=user, pool="ai"
        ) as events:
            snapshot = await next_event(events)
            payload = (await on_first(CONSUME, input=consume_input(app, {"id": user}, 3)))[
                "consumeCredits"
            ]
            event = await next_event(events)
            assert event["remaining"] == 47 == payload["balance"]["remaining"]
            assert event["version"] > snapshot["version"]

            first.kill()  # the relay's leader dies; the second process must take over
            on_second = Caller(http, second.graphql, app.admin.key)
            await on_second(CONSUME, input=consume_input(app, {"id": user}, 2))
            event = await next_event(events, wait=10)
            assert event["remaining"] == 45
    finally:
        for process in (first, second):
            if process is not None and process.popen.poll() is None:
                process.popen.terminate()
                process.popen.wait(timeout=10)
        redis_process.terminate()
        redis_process.wait(timeout=10)


async def test_a_commit_of_a_process_killed_before_publishing_is_still_published(
    cluster, http, redis_server
) -> None:
    redis_url, binary = redis_server
    redis_process = _start_redis(redis_url, binary)
    relay = None
    try:
        relay = start_server(cluster, redis_url)
        app = await application(
            Entry(relay.graphql, cluster.organization_key), http, users=1, credits_each=20
        )
        user = app.end_user_ids[0]
        async with subscribed(
            relay.graphql, app.reader.key, app=app.id, endUser=user, pool="ai"
        ) as events:
            await next_event(events)
            # A writer process commits a consumption and is SIGKILLed before it can publish.
            script = (
                "import asyncio, os, signal\n"
                "from api.database import init_database\n"
                "from api.settings import Settings\n"
                "from models.ledger import consume_credits\n"
                "from models.references import EndUserRef\n"
                "async def main():\n"
                f"    await init_database(Settings(DATABASE_URL={cluster.database_url!r}))\n"
                f"    await consume_credits({int(app.id)}, 'ai',"
                f" EndUserRef(id={int(user)}), 7, 'x')\n"
                "    os.kill(os.getpid(), signal.SIGKILL)\n"
                "asyncio.run(main())\n"
            )
            writer = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", script], timeout=60
            )
            assert writer.returncode == -signal.SIGKILL
            event = await next_event(events, wait=10)
            assert event["remaining"] == 13 and event["cause"] == "CONSUME"
    finally:
        if relay is not None:
            relay.popen.terminate()
            relay.popen.wait(timeout=10)
        redis_process.terminate()
        redis_process.wait(timeout=10)


async def test_everything_committed_during_a_redis_restart_is_published(
    cluster, http, redis_server
) -> None:
    redis_url, binary = redis_server
    redis_process = _start_redis(redis_url, binary)
    process = None
    try:
        process = start_server(cluster, redis_url)
        app = await application(
            Entry(process.graphql, cluster.organization_key), http, users=5, credits_each=100
        )
        caller = Caller(http, process.graphql, app.admin.key)

        async def burst(count: int) -> list[dict]:
            return await asyncio.gather(
                *(
                    caller(CONSUME, input=consume_input(app, {"id": app.end_user_ids[i % 5]}))
                    for i in range(count)
                )
            )

        await burst(20)
        redis_process.kill()
        redis_process.wait(timeout=10)
        during = await burst(30)  # the ledger keeps working without Redis
        assert all(r["consumeCredits"]["errors"] == [] for r in during)
        redis_process = _start_redis(redis_url, binary)
        await burst(20)

        deadline = time.monotonic() + 15
        database = await asyncpg.connect(plain_postgres_dsn(cluster.database_url))
        try:
            while await database.fetchval("SELECT count(*) FROM outbox_event"):
                assert time.monotonic() < deadline, "rows left unpublished after Redis returned"
                await asyncio.sleep(0.2)
        finally:
            await database.close()
        # A subscriber connecting now sees the final versions.
        for user in app.end_user_ids:
            async with subscribed(
                process.graphql, app.reader.key, app=app.id, endUser=user, pool="ai"
            ) as events:
                snapshot = await next_event(events)
                assert (snapshot["used"], snapshot["remaining"]) == (14, 86)
    finally:
        if process is not None:
            process.popen.terminate()
            process.popen.wait(timeout=10)
        redis_process.terminate()
        redis_process.wait(timeout=10)


async def test_serve_workers_share_subscriptions_through_redis(cluster, http, redis_server) -> None:
    """`usagegraph serve --workers 2`: requests land on either worker, events reach all."""
    redis_url, binary = redis_server
    redis_process = _start_redis(redis_url, binary)
    workers = None
    try:
        workers = start_server(cluster, redis_url, "--workers", "2", "--no-access-log")
        url = workers.graphql
        app = await application(
            Entry(url, cluster.organization_key), http, users=1, credits_each=30
        )
        user = app.end_user_ids[0]
        async with subscribed(url, app.reader.key, app=app.id, endUser=user, pool="ai") as events:
            await next_event(events)
            for expected in (29, 28, 27, 26, 25, 24):
                # A new connection each time, so the calls spread over both workers.
                async with httpx.AsyncClient(timeout=30) as fresh:
                    await Caller(fresh, url, app.admin.key)(
                        CONSUME, input=consume_input(app, {"id": user})
                    )
                assert (await next_event(events, wait=10))["remaining"] == expected
    finally:
        if workers is not None:
            workers.popen.terminate()
            workers.popen.wait(timeout=20)
        redis_process.terminate()
        redis_process.wait(timeout=10)
