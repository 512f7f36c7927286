"""Tortoise configuration and the one way the process opens and closes the database."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.migrations.api import migrate

from api.settings import Settings
from models.allocation_report import forget_kept_pages
from models.read_sessions import Connect, close_read_sessions, open_read_sessions
from models.references import forget_references
from models.sql import PLANNED_ONCE_CONNECTION
from resolvers.runtime.versions import fast_paths_enabled

MIGRATION_LOCK_ID = 7461001
MODEL_MODULES = [
    "models.tenancy",
    "models.credits",
    "models.records",
    "models.request_log",
    "models.billing",
    "models.rollups",
    "models.webhooks",
]


def connection_url(settings: Settings) -> str:
    """The database URL with the pool sized from settings (asyncpg's default is only 5)."""
    url = settings.database_url
    if not settings.is_postgres:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("minsize", str(settings.db_pool_min))
    query.setdefault("maxsize", str(settings.db_pool_max))
    scheme = "postgres" if parts.scheme == "postgresql" else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


class PooledConnection(asyncpg.Connection):
    """A pool connection released without asyncpg's reset statement (advisory unlock, CLOSE
    ALL, UNLISTEN, RESET ALL: one more round trip per statement Tortoise runs outside a
    transaction). Nothing on the pool leaves session state behind: advisory locks, LISTEN
    and session settings live on connections of their own (relay, migrations, export, the
    reads planned once), the export's `SET LOCAL`s and its cursors end with their
    transaction. asyncpg still rolls back a transaction left open before the connection
    returns to the pool."""

    def get_reset_query(self) -> str:
        return ""


def connection_config(settings: Settings) -> str | dict[str, Any]:
    if not settings.is_postgres:
        return settings.database_url
    config = expand_db_url(connection_url(settings))
    config["credentials"]["connection_class"] = PooledConnection
    # Reports join a tail of unknown length (the ledger since the fold's watermark): the
    # planner's estimate crosses the JIT threshold, and compiling costs many times the query.
    # A page's statement writes burn values as text (models.allocation_report): rates in
    # PostgreSQL's shortest float spelling (orjson's digits) and moments in the ISO style,
    # whatever the server's defaults.
    config["credentials"]["server_settings"] = {
        "jit": "off",
        "extra_float_digits": "1",
        "DateStyle": "ISO, MDY",
    }
    return config


def planned_once_config(settings: Settings) -> dict[str, Any]:
    """The small pool of the reads planned once (models.sql `_fetch_planned_once`): its
    sessions use generic plans, made once per connection and statement."""
    config = copy.deepcopy(connection_config(settings))
    assert isinstance(config, dict)
    credentials = config["credentials"]
    credentials["minsize"] = 1
    credentials["maxsize"] = settings.db_planned_pool_max
    credentials["server_settings"] = {
        **credentials["server_settings"],
        "plan_cache_mode": "force_generic_plan",
    }
    return config


def plain_postgres_dsn(url: str) -> str:
    """A libpq-style DSN for asyncpg itself, without Tortoise's pool parameters."""
    parts = urlsplit(url)
    query = {k: v for k, v in parse_qsl(parts.query) if k not in ("minsize", "maxsize")}
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))


def tortoise_config(settings: Settings) -> dict[str, Any]:
    connections = {"default": connection_config(settings)}
    if settings.is_postgres:
        connections[PLANNED_ONCE_CONNECTION] = planned_once_config(settings)
    return {
        "connections": connections,
        "apps": {
            "models": {
                "models": MODEL_MODULES,
                "migrations": "models.migrations",
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def init_database(settings: Settings) -> None:
    # One process-wide context: request tasks and background jobs all see it.
    await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)
    if settings.is_postgres and fast_paths_enabled():
        open_read_sessions(read_session_connect(settings), settings.db_planned_pool_max)


def read_session_connect(settings: Settings) -> Connect:
    """Opens a session like those of Tortoise's pool of the reads planned once."""
    dsn = plain_postgres_dsn(settings.database_url)
    server_settings = planned_once_config(settings)["credentials"]["server_settings"]
    return lambda: asyncpg.connect(dsn, server_settings=server_settings)


async def close_database() -> None:
    await close_read_sessions()
    await Tortoise.close_connections()
    forget_references()
    forget_kept_pages()


async def apply_migrations(settings: Settings) -> None:
    """Apply every pending migration; on PostgreSQL under an advisory lock, so that several
    processes starting at once migrate one after the other instead of racing."""
    config = tortoise_config(settings)
    if not settings.is_postgres:
        await migrate(config=config)
        return
    # A separate plain connection holds the lock: migrate() re-initialises Tortoise's pools.
    lock_conn = await asyncpg.connect(plain_postgres_dsn(settings.database_url))
    try:
        await lock_conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        await migrate(config=config)
    finally:
        await lock_conn.close()  # closing the session releases the lock
