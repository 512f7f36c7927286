"""Real databases for the tests: a fresh SQLite file and a fresh PostgreSQL database per run.

PostgreSQL tests skip with a reason when no server answers, unless
USAGEGRAPH_REQUIRE_SERVICES=1 (CI sets it), where they fail instead."""

from __future__ import annotations

import asyncio
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE

from api.database import apply_migrations, close_database, init_database
from api.settings import Settings
from models.accounts import create_application, create_organization
from models.tenancy import Application

PG_ADMIN_DSN = os.environ.get("USAGEGRAPH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("USAGEGRAPH_REQUIRE_SERVICES") == "1"


async def _postgres_database() -> str | None:
    """Creates a scratch database; its URL, or None when PostgreSQL is not reachable."""
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if REQUIRE_SERVICES:
            raise
        print(f"PostgreSQL not reachable: {exc}")
        return None
    name = f"usagegraph_test_{uuid.uuid4().hex[:10]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgres://", 1)
    return f"{base}/{name}"


async def _drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?")[0]
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _switch_database() -> None:
    """Closes the database so that the next backend can bind the models afresh: Tortoise
    caches each model's SQL per connection name (a server process never needs this)."""
    await close_database()
    await Tortoise._reset_apps()
    EXECUTOR_CACHE.clear()


REDIS_TEST_URL = os.environ.get("USAGEGRAPH_TEST_REDIS", "redis://127.0.0.1:6379/15")


async def _redis_url() -> str | None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        if REQUIRE_SERVICES:
            raise
        print(f"Redis not reachable ({exc}): PostgreSQL tests use the in-process broker")
        return None
    finally:
        await client.aclose()
    return REDIS_TEST_URL


@dataclass
class Backend:
    name: str
    settings: Settings

    @property
    def postgres(self) -> bool:
        return self.settings.is_postgres


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path_factory) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = Path(tmp_path_factory.mktemp("sqlite")) / "usagegraph.sqlite3"
        url = f"sqlite://{path}"
    else:
        url = await _postgres_database()
        if url is None:
            pytest.skip("PostgreSQL is not reachable at " + PG_ADMIN_DSN)
    # PostgreSQL runs with Redis (the production pair), SQLite with the in-process broker.
    redis_url = await _redis_url() if request.param == "postgres" else None
    settings = Settings(DATABASE_URL=url, USAGEGRAPH_DB_POOL_MAX=30, REDIS_URL=redis_url)
    await apply_migrations(settings)
    await _switch_database()
    await init_database(settings)
    try:
        yield Backend(request.param, settings)
    finally:
        await _switch_database()
        if request.param == "postgres":
            await _drop_postgres_database(url)


@dataclass
class Tenant:
    organization_id: int
    application: Application

    @property
    def application_id(self) -> int:
        return self.application.id


@pytest.fixture
async def tenant(backend: Backend) -> Tenant:
    """A fresh organization and application, so tests share a database but not data."""
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    application = await create_application(organization.id, "app")
    return Tenant(organization.id, application)


__all__ = ["Backend", "Tenant", "Tortoise"]


@dataclass
class Server:
    url: str
    organization_key: str
    realtime: Any = None  # the served app's subscriptions.realtime.Realtime
    request_log: Any = None  # the served app's api.request_log_writer.RequestLogWriter

    @property
    def graphql(self) -> str:
        return f"{self.url}/graphql"


@asynccontextmanager
async def on_loopback(app: Any) -> AsyncIterator[str]:
    """An ASGI app served by uvicorn on a free loopback port, in this process and event
    loop, without its lifespan; its base URL."""
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        ws="websockets-sansio",
    )
    uv = uvicorn.Server(config)
    task = asyncio.ensure_future(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        await task


@asynccontextmanager
async def serving(backend: Backend, fast_websockets: bool | None = None) -> AsyncIterator[Server]:
    """The real ASGI app served by uvicorn on a free port, in this process and event loop,
    on the backend's database (which the fixture has already opened); `fast_websockets`
    as `create_app` takes it (False: Strawberry's stock WebSocket handlers)."""
    from api.app import create_app

    app = create_app(backend.settings, migrate=False, fast_websockets=fast_websockets)
    await app.state.realtime.start()
    await app.state.request_log.start()  # the lifespan is off: start what it would
    try:
        async with on_loopback(app) as url:
            _, issued = await create_organization("HTTP tests")
            yield Server(
                url=url,
                organization_key=issued.secret,
                realtime=app.state.realtime,
                request_log=app.state.request_log,
            )
    finally:
        await app.state.request_log.close()
        await app.state.realtime.close()


@pytest.fixture(scope="session")
async def server(backend: Backend) -> AsyncIterator[Server]:
    """The service as it runs, for the HTTP and WebSocket tests."""
    async with serving(backend) as served:
        yield served


# httpx makes a TLS context for every client (20-30 ms: it loads the CA bundle); the tests'
# clients speak plain HTTP on loopback, and share this one.
CLIENT_TLS = ssl.create_default_context()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for a test's requests to the `server` (64 connections at most)."""
    # Idle connections dropped before uvicorn's keep-alive of 5 s ends them: at the same 5 s,
    # a request after a wait could go out on a connection the server was closing (ReadError).
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2)
    async with httpx.AsyncClient(limits=limits, timeout=60, verify=CLIENT_TLS) as client:
        yield client


@pytest.fixture
async def outbox_held() -> AsyncIterator[None]:
    """Holds every relay of this process (the `server` fixture's, when it runs) for a test
    that counts the outbox rows its writes leave: a relay deletes the rows it published."""
    from subscriptions.relay import OutboxRelay

    relays = list(OutboxRelay.running)
    for relay in relays:
        await relay.hold()
    try:
        yield
    finally:
        for relay in relays:
            relay.resume()


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """One `now` for every request's loaders (burn rates, projections), so answers made
    one after the other can be compared."""
    frozen = datetime.now(UTC)

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return frozen

    monkeypatch.setattr("resolvers.loaders.datetime", FrozenDatetime)
    return frozen
