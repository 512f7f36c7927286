"""The one way the ledger opens a transaction and runs its hand-written SQL.

Statements are written once, in PostgreSQL's dialect, and translated for SQLite: `$n`
placeholders become `?n`, `now()` becomes SQLite's clock in the format Tortoise stores, and
row locks are dropped (Tortoise runs one SQLite transaction at a time per process). Under
`models.clock.booked_at`, `now()` is the booking time instead, on both databases."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

from asyncpg import TransactionRollbackError
from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.exceptions import OperationalError
from tortoise.transactions import in_transaction

from models.clock import booking_time
from models.read_sessions import read_sessions

T = TypeVar("T")
# A row of `Sql.records`: asyncpg's Record on PostgreSQL, a dict on SQLite; read it only
# (`row["col"]`, `.get`, `.items()`), or copy it with dict(row) to change it.
Row = Mapping[str, Any]

_PLACEHOLDER = re.compile(r"\$(\d+)")
_ROW_LOCK = re.compile(r"\s+FOR UPDATE(\s+OF\s+\w+)?(\s+SKIP LOCKED)?", re.IGNORECASE)
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f+00:00','now')"
# PostgreSQL errors worth retrying the whole transaction for.
_RETRYABLE = ("deadlock detected", "could not serialize access")
MAX_ATTEMPTS = 5

# Called after a transaction that wrote outbox rows commits (the relay's wake-up).
outbox_hooks: list[Callable[[], None]] = []


@lru_cache(maxsize=512)
def to_sqlite(statement: str) -> str:
    statement = _PLACEHOLDER.sub(r"?\1", statement)
    statement = _ROW_LOCK.sub("", statement)
    return statement.replace("now()", _SQLITE_NOW)


def _booked(statement: str, postgres: bool, moment: datetime) -> str:
    """The statement with the database clock replaced by a booking time (our own value,
    formatted here, never input), in the text form each database stores."""
    if postgres:
        return statement.replace("now()", f"CAST('{moment.isoformat()}' AS timestamptz)")
    text = moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}+00:00"
    return statement.replace(_SQLITE_NOW, f"'{text}'")


class Sql:
    """Runs statements on one connection (normally a transaction's)."""

    __slots__ = ("conn", "postgres", "wrote_outbox")

    def __init__(self, conn: BaseDBAsyncClient) -> None:
        self.conn = conn
        self.postgres = conn.capabilities.dialect == "postgres"
        self.wrote_outbox = False  # set by the outbox writer; read after commit

    def _text(self, statement: str) -> str:
        text = statement if self.postgres else to_sqlite(statement)
        moment = booking_time()
        return text if moment is None else _booked(text, self.postgres, moment)

    async def rows(self, statement: str, *args: Any) -> list[dict[str, Any]]:
        return await self.conn.execute_query_dict(self._text(statement), list(args))

    async def records(self, statement: str, *args: Any, planned_once: bool = False) -> list[Row]:
        """Rows to read, not to change: on PostgreSQL asyncpg's Records as they come, where
        Tortoise's execute_query_dict copies each into a dict (a tenth of a dashboard's
        CPU); its translation of errors kept. `planned_once`: see `_fetch_planned_once`."""
        if self.postgres:
            fetch = _fetch_planned_once if planned_once else _fetch
            return await self.conn._translate_exceptions(fetch, self._text(statement), args)  # type: ignore[attr-defined]
        return await self.rows(statement, *args)

    async def row(self, statement: str, *args: Any) -> dict[str, Any] | None:
        found = await self.rows(statement, *args)
        return found[0] if found else None

    async def value(self, statement: str, *args: Any) -> Any:
        found = await self.row(statement, *args)
        return next(iter(found.values())) if found else None

    async def run(self, statement: str, *args: Any) -> int:
        """Runs a statement without RETURNING and answers the number of rows it touched."""
        affected, _ = await self.conn.execute_query(self._text(statement), list(args))
        return affected


async def _fetch(client: Any, statement: str, args: tuple[Any, ...]) -> list[Row]:
    async with client.acquire_connection() as connection:
        return await connection.fetch(statement, *args)


# The connection (api.database) whose sessions plan every statement once, generically.
PLANNED_ONCE_CONNECTION = "planned_once"


async def _fetch_planned_once(client: Any, statement: str, args: tuple[Any, ...]) -> list[Row]:
    """A read whose plan does not depend on its arguments, planned once per connection (a
    generic plan) instead of on every call: PostgreSQL otherwise keeps planning statements
    whose generic plan it estimates dearer, and for a report built of many subqueries (or a
    page whose every row carries subqueries) that planning costs more than running it. Only
    for statements whose best plan is the same for every argument: an index serves every
    application alike, whatever its size among the others. It runs on a small pool of its
    own whose sessions plan so (`plan_cache_mode`); the main pool keeps PostgreSQL's choice,
    which suits its other statements better: the process's read sessions
    (models/read_sessions.py) when open, else Tortoise's pool of them. Inside a caller's
    transaction the read runs as it comes."""
    if not isinstance(client, TransactionalDBClient):
        sessions = read_sessions()
        if sessions is not None:
            return await sessions.fetch(statement, args)
        client = connections.get(PLANNED_ONCE_CONNECTION)
    async with client.acquire_connection() as connection:
        return await connection.fetch(statement, *args)


def values_list(rows: int, columns: int, suffix: str = "") -> str:
    """`($1,$2<suffix>),($3,$4<suffix>)` for a multi-row INSERT of `rows` rows of `columns`
    parameters each, `suffix` adding SQL expressions (such as `, now()`) to every row."""
    groups = []
    for first in range(1, rows * columns + 1, columns):
        params = ",".join(f"${i}" for i in range(first, first + columns))
        groups.append(f"({params}{suffix})")
    return ",".join(groups)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _retryable(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _RETRYABLE)


def on_postgres() -> bool:
    """Whether the database is PostgreSQL (for a statement built before it runs)."""
    return bool(connections.get("default").capabilities.dialect == "postgres")


async def single_statement(work: Callable[[Sql], Awaitable[T]]) -> T:
    """Runs `work` (one statement, atomic by itself) without BEGIN and COMMIT around it."""
    return await work(Sql(connections.get("default")))


async def written_or_plain(
    written: str | None,
    plain: str,
    args: Sequence[Any],
    unwritten: Callable[[list[Row]], bool],
    written_args: Sequence[Any] | None = None,
    planned_once: bool = False,
) -> tuple[list[Row], bool]:
    """The rows of `written`, a read whose JSON PostgreSQL writes, unless there is none, the
    database is SQLite or `unwritten` finds in them a row it could not write; else the rows
    of `plain`. And whether they are `written`'s. `written` takes `written_args` when it
    needs more parameters than `plain`'s `args`. `planned_once`: see `Sql.records`."""

    async def work(db: Sql) -> list[Row] | None:
        if written is None or not db.postgres:
            return None
        rows = await db.records(
            written,
            *(args if written_args is None else written_args),
            planned_once=planned_once,
        )
        return None if unwritten(rows) else rows

    rows = await single_statement(work)
    if rows is not None:
        return rows, True
    plain_rows = await single_statement(
        lambda db: db.records(plain, *args, planned_once=planned_once)
    )
    return plain_rows, False


async def delete_older_than(table: str, column: str, cutoff: Any, batch: int = 5_000) -> int:
    """Deletes the rows of `table` whose `column` is before `cutoff`, a bounded batch per
    statement (short locks, no huge transaction), until none is left; the number deleted.
    Safe in every process at once: two deleters of the same rows simply find fewer.
    `table` and `column` are our own identifiers, never input."""
    deleted = 0
    statement = (
        f'DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE "{column}" < $1 LIMIT $2)'
    )
    while True:
        count = await single_statement(lambda db: db.run(statement, cutoff, batch))
        deleted += count
        if count < batch:
            return deleted


async def transaction(work: Callable[[Sql], Awaitable[T]]) -> T:
    """Runs `work` in one database transaction, retried from the start on a deadlock or
    serialization failure (both roll the whole transaction back, so a retry is safe).

    A caller cancelled meanwhile (graphql-core cancels the sibling fields of one that
    failed) does not cut the transaction short: it runs to its end in a task of its own.
    Tortoise's SQLite transaction, cancelled inside its BEGIN, never releases the
    connection's lock, and every later query of the process would wait for it forever."""
    running = asyncio.ensure_future(_transaction(work))
    running.add_done_callback(_retrieve)
    return await asyncio.shield(running)


def _retrieve(done: asyncio.Future[Any]) -> None:
    """Marks the outcome of a transaction whose caller went away as seen."""
    if not done.cancelled():
        done.exception()


async def _transaction(work: Callable[[Sql], Awaitable[T]]) -> T:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with in_transaction("default") as conn:
                db = Sql(conn)
                result = await work(db)
            if db.wrote_outbox:
                for hook in outbox_hooks:
                    hook()
            return result
        except (OperationalError, TransactionRollbackError) as exc:  # Tortoise's or asyncpg's
            if attempt == MAX_ATTEMPTS or not _retryable(exc):
                raise
            await asyncio.sleep(0.005 * attempt)
    raise AssertionError("unreachable")
