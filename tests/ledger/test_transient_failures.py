"""Real faults, no mocks: PostgreSQL backends terminated mid-request, a SQLite file locked by
another writer, a Redis subscription not yet live. A transient failure is answered
UNAVAILABLE (503 with Retry-After when the whole request failed, 1013 on a WebSocket's
connection_init), a retry with the same idempotency key is applied once, and subscribers
never receive an event rendered on a failure."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from graphql import GraphQLError
from redis.exceptions import ConnectionError as RedisConnectionError
from tortoise.exceptions import DBConnectionError, OperationalError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.database import plain_postgres_dsn
from models.events import BalanceChanged, LiveEvent
from models.transient import is_transient
from subscriptions.broker import InProcessBroker, RedisBroker, application_channel
from subscriptions.fanout import EVENTS, RENDER_RETRY_PAUSES, Fanout, Selection, Topic
from subscriptions.relay import OutboxRelay
from tests.applications import application, consume_input
from tests.conftest import REDIS_TEST_URL, Backend
from tests.graphql_client import CONSUME, CREATE_API_KEY, Caller
from tests.live_events import alert_event, balance_event
from tests.subscribing import LEGACY_WS, TRANSPORT_WS, frame, settled, subscriber

Strike = Callable[[], Awaitable[None]]
# SQLite readers never wait for a writer (WAL): reads cannot fail transiently there.
POSTGRES_ONLY = pytest.mark.parametrize("backend", ["postgres"], indirect=True)
VIEWER = "query { viewer { role } }"
WHO = """
subscription($app: ID!, $endUser: ID) {
  balanceChanged(applicationId: $app, endUserId: $endUser) {
    version remaining endUser { externalId }
  }
}"""


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def _terminate_when_waiting(fault: asyncpg.Connection, struck: set[int]) -> None:
    """Once a backend (not struck before) waits on the fault's lock, every other
    connection to the test database is terminated (the server's pool, the relay's)."""
    for _ in range(1_000):
        # inside the fault's transaction, the activity view is a snapshot until cleared
        await fault.execute("SELECT pg_stat_clear_snapshot()")
        waiting = await fault.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        if {row["pid"] for row in waiting} - struck:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("no query waited on the lock")
    killed = await fault.fetch(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    struck.update(row["pid"] for row in killed)


@asynccontextmanager
async def table_fault(backend: Backend, table: str) -> AsyncIterator[Strike]:
    """Holds `table` locked from another connection; `strike()`, awaited while a request
    runs, makes that request's database work fail: on PostgreSQL its connection is
    terminated while it waits on the lock; on SQLite (a write) the busy timeout expires
    and it reads 'database is locked'."""
    if backend.postgres:
        fault = await asyncpg.connect(plain_postgres_dsn(backend.settings.database_url))
        transaction = fault.transaction()
        await transaction.start()
        await fault.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            struck: set[int] = set()
            yield lambda: _terminate_when_waiting(fault, struck)
        finally:
            await transaction.rollback()
            await fault.close()
        return
    path = backend.settings.database_url.removeprefix("sqlite://")
    writer = sqlite3.connect(path, timeout=1, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the one write lock of the file

    async def nothing() -> None:
        return None

    try:
        yield nothing
    finally:
        writer.execute("ROLLBACK")
        writer.close()


async def _answered(caller: Caller, query: str, **variables: Any) -> dict[str, Any]:
    """What a client does with a 503: retry (a pooled connection terminated while idle may
    still fail one more request)."""
    for _ in range(5):
        response = await caller.raw(query, variables)
        if response.status_code != 503:
            break
        await asyncio.sleep(0.1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", ())]


async def _consumed_under_fault(
    server: Any, http: httpx.AsyncClient, backend: Backend, table: str
) -> tuple[Any, dict[str, Any], httpx.Response]:
    """A fresh application, a consumption of 3 of its End User's 10 credits (with an
    idempotency key) and its answer, sent while `table` is under a fault."""
    app = await application(server, http, users=1, credits_each=10)
    consume = consume_input(app, {"id": app.end_user_ids[0]}, credits=3)
    consume["idempotencyKey"] = f"fault-{uuid.uuid4().hex}"
    async with table_fault(backend, table) as strike:
        request = asyncio.ensure_future(app.admin.raw(CONSUME, {"input": consume}))
        await strike()
        return app, consume, await request


async def test_a_write_that_loses_its_database_is_unavailable_and_safe_to_retry(
    server, http, backend, caplog
) -> None:
    app, consume, failed = await _consumed_under_fault(server, http, backend, "credit_pool")
    assert failed.status_code == 503, failed.text
    assert failed.headers["retry-after"] == "1"
    body = failed.json()
    assert _codes(body) == ["UNAVAILABLE"] and body["data"] is None
    assert "idempotency key" in body["errors"][0]["message"]
    logged = [r for r in caplog.records if r.name == "usagegraph.graphql"]
    assert [r.levelname for r in logged] == ["WARNING"]  # one line, no traceback
    assert logged[0].exc_info is None and "unavailable at consumeCredits" in logged[0].message

    applied = (await _answered(app.admin, CONSUME, input=consume))["consumeCredits"]
    replayed = (await _answered(app.admin, CONSUME, input=consume))["consumeCredits"]
    assert applied["errors"] == [] and not applied["replayed"]
    assert replayed["replayed"] and replayed["balance"] == applied["balance"]
    assert applied["balance"]["used"] == 3 and applied["balance"]["remaining"] == 7


@POSTGRES_ONLY
async def test_a_write_whose_answer_failed_after_its_commit_is_replayed_by_a_retry(
    server, http, backend
) -> None:
    """The consumption commits; reading what its answer selects (the threshold, after the
    commit) loses its connection: the answer carries UNAVAILABLE beside what it has, and a
    retry with the same key replays the committed consumption, never a second one."""
    app, consume, partial = await _consumed_under_fault(
        server, http, backend, "end_user_window_usage"
    )
    assert partial.status_code == 200, partial.text  # not the whole request: its data came
    body = partial.json()
    assert _codes(body) == ["UNAVAILABLE"]
    assert body["data"]["consumeCredits"]["balance"]["remaining"] == 7

    replayed = (await _answered(app.admin, CONSUME, input=consume))["consumeCredits"]
    assert replayed["replayed"] and replayed["errors"] == []
    assert replayed["balance"]["used"] == 3 and replayed["balance"]["remaining"] == 7


async def _fresh_key(server, http, app_id: str) -> str:
    org = Caller(http, server.graphql, server.organization_key)
    made = await org(
        CREATE_API_KEY, input={"applicationId": app_id, "name": "fresh", "role": "ADMIN"}
    )
    return made["createApiKey"]["secret"]  # never looked up yet: not remembered


def _requests(server, app_id: str, key: str) -> dict[str, Callable[[httpx.AsyncClient], Any]]:
    auth = {"Authorization": f"Bearer {key}"}
    export = f"{server.url}/v1/applications/{app_id}/export"
    return {
        "graphql": lambda http: http.post(server.graphql, json={"query": VIEWER}, headers=auth),
        "export": lambda http: http.get(
            export,
            params={
                "type": "consumption",
                "from": "2026-01-01T00:00:00Z",
                "to": "2026-02-01T00:00:00Z",
            },
            headers=auth,
        ),
        "ingest": lambda http: http.post(
            f"{server.url}/v1/request-logs", json={"records": []}, headers=auth
        ),
    }


@POSTGRES_ONLY
@pytest.mark.parametrize("route", ["graphql", "export", "ingest"])
async def test_a_credential_lookup_that_loses_its_database_is_503(
    server, http, backend, route
) -> None:
    app = await application(server, http, users=1)
    key = await _fresh_key(server, http, app.id)
    async with table_fault(backend, "api_key") as strike:
        request = asyncio.ensure_future(_requests(server, app.id, key)[route](http))
        await strike()
        failed = await request
    assert failed.status_code == 503, failed.text
    assert failed.headers["retry-after"] == "1"
    body = failed.json()  # in each route's own error shape
    codes = {
        "graphql": lambda: _codes(body),
        "export": lambda: [body["error"]["code"]],
        "ingest": lambda: [error["code"] for error in body["errors"]],
    }
    assert codes[route]() == ["UNAVAILABLE"]
    for _ in range(5):  # as a client retries a 503
        retried = await _requests(server, app.id, key)[route](http)
        if retried.status_code != 503:
            break
        await asyncio.sleep(0.1)
    assert retried.status_code == 200, retried.text


@POSTGRES_ONLY
@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_websocket_whose_credential_cannot_be_checked_is_told_to_try_again(
    server, http, backend, protocol
) -> None:
    app = await application(server, http, users=1)
    key = await _fresh_key(server, http, app.id)
    url = server.graphql.replace("http", "ws", 1)
    async with connect(url, subprotocols=[protocol]) as ws:
        async with table_fault(backend, "api_key") as strike:
            init = {"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}
            await ws.send(json.dumps(init))
            await strike()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1013  # try again later, not 4403 (a bad credential)


async def _whole_frames_until(ws: Any, version: int) -> dict[str, Any]:
    """The frames up to the one of `version` (Redis channels are shared by every database
    of the server: others' events of the same ids may come too), each whole: no error,
    the End User there."""
    while True:
        payload = json.loads(await frame(ws, wait=10))["payload"]
        assert "errors" not in payload, payload
        changed = payload["data"]["balanceChanged"]
        assert changed["endUser"] == {"externalId": "u0"}
        if changed["version"] == version:
            return changed


@asynccontextmanager
async def relays_held() -> AsyncIterator[Callable[[], None]]:
    """The outbox relays of this process (the server's) hold their rows until resumed (by
    the function given, or at the end)."""
    relays = list(OutboxRelay.running)
    for relay in relays:
        await relay.hold()

    def resume() -> None:
        for relay in relays:
            relay.resume()

    try:
        yield resume
    finally:
        resume()


@POSTGRES_ONLY
@pytest.mark.parametrize("strikes", [1, len(RENDER_RETRY_PAUSES) + 1])
async def test_a_rendering_that_loses_its_database_is_retried_never_sent_degraded(
    server, http, backend, strikes
) -> None:
    """Once: the rendering is tried again. Past every retry: the balance is read again
    (a resync) and its version sent once the database answers."""
    app = await application(server, http, users=1, credits_each=10)
    u0 = app.end_user_ids[0]
    async with subscriber(server, app.reader.key, WHO, app=app.id, endUser=u0) as ws:
        first = json.loads(await frame(ws))["payload"]
        assert first["data"]["balanceChanged"]["endUser"] == {"externalId": "u0"}
        await settled(server, int(app.id))
        async with relays_held() as resume:
            consumed = await app.admin(CONSUME, input=consume_input(app, {"id": u0}, credits=4))
            # The relay publishes; the shared rendering's End User read waits on the lock
            # and its connection is terminated under it.
            async with table_fault(backend, "end_user") as strike:
                resume()
                for _ in range(strikes):
                    await strike()
        version = consumed["consumeCredits"]["balance"]["version"]
        assert (await _whole_frames_until(ws, version))["remaining"] == 6


def _unused_application_id() -> int:
    """Redis channels are shared by every database of the server: an id nobody else uses."""
    return 2**40 + uuid.uuid4().int % 2**40


async def _no_snapshots(_: Topic) -> list[LiveEvent]:
    return []


async def test_an_event_not_rendered_is_repaired_by_a_resync() -> None:
    """A rendering that fails outside field resolution leaves its version open: the next
    resync (after a broker reconnect) delivers it."""
    broker = RedisBroker(REDIS_TEST_URL)
    application_id = _unused_application_id()
    snapshot = balance_event(end_user_id=5, version=3)

    async def snapshots(_: Topic) -> list[BalanceChanged]:
        return [snapshot]

    fanout = Fanout(broker, snapshots)
    failures = [RuntimeError("rendering failed")]

    async def render(event: LiveEvent) -> int:
        if failures:
            raise failures.pop()
        return event.version

    await broker.start()
    try:
        await asyncio.wait_for(broker.connected.wait(), 5)
        topic = Topic(application_id, end_user_id=5)
        watcher = await fanout.join(topic, Selection("doc", lambda: render))
        envelope = {"topic": "balance", "event": snapshot.to_json()}
        await broker.publish(application_channel(application_id), json.dumps(envelope).encode())
        await asyncio.sleep(0.3)
        assert watcher.pending == {}  # the failed rendering was not sent
        for hook in broker.hooks:  # what a reconnect does
            hook()
        assert await asyncio.wait_for(watcher.take(), 5) == [3]
        fanout.leave(watcher)
    finally:
        await broker.close()


async def test_an_alert_whose_rendering_keeps_failing_goes_through_again() -> None:
    """An alert has no snapshot to read again: past the rendering's retries it is offered
    again itself, and delivered once the rendering succeeds."""
    broker = InProcessBroker()
    fanout = Fanout(broker, _no_snapshots)
    failures = len(RENDER_RETRY_PAUSES) + 2  # past every retry of the first dispatch
    attempts: list[int] = []

    async def render(event: LiveEvent) -> str:
        attempts.append(event.version)
        if len(attempts) <= failures:
            raise ConnectionResetError("connection reset by peer")
        return f"alert {event.version}"

    application_id = _unused_application_id()
    watcher = await fanout.join(Topic(application_id, "alert"), Selection("a", lambda: render))
    try:
        alert = alert_event(9, application_id)
        envelope = json.dumps({"topic": "alert", "event": alert.to_json()}).encode()
        await broker.publish(application_channel(application_id), envelope)
        assert await asyncio.wait_for(watcher.take(), 10) == ["alert 9"]
        assert len(attempts) == failures + 1
    finally:
        fanout.leave(watcher)


def _resp(*parts: str) -> bytes:
    """A Redis command in the protocol's own framing."""
    encoded = [part.encode() for part in parts]
    return f"*{len(encoded)}\r\n".encode() + b"".join(
        f"${len(part)}\r\n".encode() + part + b"\r\n" for part in encoded
    )


async def test_a_first_subscriber_hears_everything_published_once_it_joined() -> None:
    """Joining returns once the process's Redis subscription is live: a snapshot read
    after it cannot miss an event published meanwhile. The event is published the moment
    `join` returns, before this process runs anything else (a raw write)."""
    broker = RedisBroker(REDIS_TEST_URL)
    fanout = Fanout(broker, _no_snapshots)
    address = urlsplit(REDIS_TEST_URL)
    reader, writer = await asyncio.open_connection(address.hostname, address.port or 6379)
    await broker.start()
    try:
        await asyncio.wait_for(broker.connected.wait(), 5)
        for _ in range(10):
            application_id = _unused_application_id()  # each time a first subscriber
            event = balance_event(application_id=application_id)
            envelope = json.dumps({"topic": "balance", "event": event.to_json()})
            watcher = await fanout.join(Topic(application_id), EVENTS)
            writer.write(_resp("PUBLISH", application_channel(application_id), envelope))
            assert await reader.readline() == b":1\r\n"  # one receiver: this process
            assert await asyncio.wait_for(watcher.take(), 2) == [event]
            fanout.leave(watcher)
    finally:
        writer.close()
        await broker.close()


@POSTGRES_ONLY
@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_subscription_whose_snapshot_cannot_be_read_gets_unavailable(
    server, http, backend, protocol
) -> None:
    app = await application(server, http, users=1)
    async with table_fault(backend, "credit_pool") as strike:
        async with subscriber(server, app.reader.key, WHO, protocol, app=app.id) as ws:
            await strike()
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "error" and message["id"] == "7"
    errors = message["payload"] if protocol == TRANSPORT_WS else [message["payload"]]
    assert [error["extensions"]["code"] for error in errors] == ["UNAVAILABLE"]


async def _kill_redis_clients(kind: str) -> int:
    """Kills this test database's Redis connections of `kind` (pubsub, normal), by id:
    other databases of the server belong to others."""
    database = int(urlsplit(REDIS_TEST_URL).path.strip("/") or 0)
    admin = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        ours = [
            client["id"]
            for client in await admin.client_list(_type=kind)
            if int(client["db"]) == database and client["name"] != "fault-injector"
        ]
        for client_id in ours:
            await admin.client_kill_filter(_id=client_id)
        return len(ours)
    finally:
        await admin.aclose()


@POSTGRES_ONLY
async def test_a_subscriber_gets_every_change_across_a_lost_redis_connection(
    server, http, backend
) -> None:
    """Redis connections killed while a change is published: the broker reconnects and
    resyncs, the relay publishes again; the subscriber gets the change."""
    app = await application(server, http, users=1, credits_each=10)
    u0 = app.end_user_ids[0]
    async with subscriber(server, app.reader.key, WHO, app=app.id, endUser=u0) as ws:
        await frame(ws)
        await settled(server, int(app.id))
        async with relays_held():
            consumed = await app.admin(CONSUME, input=consume_input(app, {"id": u0}, credits=2))
            assert await _kill_redis_clients("pubsub") >= 1
            assert await _kill_redis_clients("normal") >= 1
        version = consumed["consumeCredits"]["balance"]["version"]
        assert (await _whole_frames_until(ws, version))["remaining"] == 8


@POSTGRES_ONLY
async def test_a_query_over_get_that_loses_its_database_is_503(server, http, backend) -> None:
    """A GET answers a transient failure as a POST does."""
    app = await application(server, http, users=1)
    query = "query($id: ID!) { application(id: $id) { pools { key remaining } } }"
    params = {"query": query, "variables": json.dumps({"id": app.id})}
    headers = {"Authorization": f"Bearer {app.reader.key}", "Accept": "application/json"}
    async with table_fault(backend, "credit_pool") as strike:
        request = asyncio.ensure_future(http.get(server.graphql, params=params, headers=headers))
        await strike()
        failed = await request
    assert failed.status_code == 503, failed.text
    assert failed.headers["retry-after"] == "1"
    assert _codes(failed.json()) == ["UNAVAILABLE"]


async def test_a_database_that_cannot_be_reached_is_transient() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Exception) as refused:
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/x", timeout=2)
    assert is_transient(refused.value)


def test_what_is_transient() -> None:
    """Wrapped or not, a lost connection, a busy SQLite file or Redis away is transient;
    a bug or a bad statement is not."""
    locked = sqlite3.OperationalError("database is locked")
    wrapped = OperationalError(locked)
    wrapped.__context__ = locked  # as Tortoise's SQLite client raises it, inside `except`
    assert is_transient(wrapped)
    assert is_transient(GraphQLError("x", original_error=asyncpg.AdminShutdownError()))
    assert is_transient(asyncpg.ConnectionDoesNotExistError("connection was closed"))
    assert is_transient(asyncpg.InterfaceError("the underlying connection is closed"))
    assert is_transient(DBConnectionError("cannot connect"))
    assert is_transient(
        asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        )
    )
    assert is_transient(RedisConnectionError("Connection closed by server."))
    assert not is_transient(OperationalError(sqlite3.OperationalError("no such table: x")))
    assert not is_transient(asyncpg.UndefinedColumnError("column x does not exist"))
    assert not is_transient(asyncpg.InterfaceError("another operation is in progress"))
    assert is_transient(OSError(errno.EHOSTUNREACH, "No route to host"))
    assert not is_transient(FileNotFoundError(errno.ENOENT, "no such file"))
    assert not is_transient(ValueError("a bug"))
    assert not is_transient(None)
