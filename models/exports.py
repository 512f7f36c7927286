"""Exports (docs/billing-and-export.md#export): the rows of one application's records in a time
range, streamed in batches so memory stays constant whatever the number of rows.

What each type holds and which time its range applies to:
- consumption: one row per usage event; range on `occurred_at` (as the integrator sent it);
  ordered by occurred_at, id.
- ledger: one row per ledger entry; range on `created_at` (booking time, as billing periods,
  so a month's ledger export sums to its billing period); ordered by id.
- allocations: one row per End User and pool; allocated / released / used / expired booked
  inside the range, remaining at its end; ordered by End User, pool.
- request_log: one row per request log entry; range on `time`; ordered by time, id.
- billing: one row per billing period and pool, for the periods starting inside the range.

On PostgreSQL the rows come from one server-side cursor on a connection of the export's
own (one snapshot, one plan, `FETCH n` at a time); on SQLite from keyset batches (each batch
resumes after the last row's sort key). Timestamps are ISO 8601 in UTC with microseconds
(`2026-11-25T18:25:11.123456Z`) on both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import asyncpg
from tortoise import connections

from models.billing import as_utc, billing_period, month_start, next_month, time_param
from models.errors import ValidationFailed
from models.sql import Sql, dumps, single_statement, to_sqlite

BATCH_ROWS = 5_000
SESSION_NAME = "usagegraph-export"  # PostgreSQL application_name of an export's connection
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_PG_TIME = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


class ExportType(StrEnum):
    CONSUMPTION = "consumption"
    LEDGER = "ledger"
    ALLOCATIONS = "allocations"
    REQUEST_LOG = "request_log"
    BILLING = "billing"


class ExportFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"


class ColumnKind(StrEnum):
    INT = "int"
    FLOAT = "float"
    TEXT = "text"
    TIME = "time"  # an ISO 8601 UTC string in every format
    JSON = "json"  # JSON text in CSV, the value itself in NDJSON


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: ColumnKind
    sql: str = ""  # the raw value's SQL expression (billing rows are not from SQL)


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """One export: [start, end) of one type of one application, in one format."""

    application_id: int
    type: ExportType
    start: datetime
    end: datetime
    format: ExportFormat

    def validated(self) -> ExportSpec:
        for name, moment in (("from", self.start), ("to", self.end)):
            if moment.tzinfo is None:
                raise ValidationFailed(f"{name} must carry a time zone", field=name)
        if self.start >= self.end:
            raise ValidationFailed("from must be before to", field="from")
        return self

    def file_name(self, application_name: str) -> str:
        """`<app>-<type>-<from>-<to>.<format>`, safe in a Content-Disposition header."""
        safe = "".join(
            c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in application_name
        )
        stamp = "%Y%m%dT%H%M%SZ"
        return (
            f"{safe.strip('_') or 'application'}-{self.type.value}"
            f"-{self.start.astimezone(UTC).strftime(stamp)}"
            f"-{self.end.astimezone(UTC).strftime(stamp)}.{self.format.value}"
        )


@dataclass(frozen=True, slots=True)
class RowQuery:
    """A streamed export: `FROM ... WHERE ...` over $1 application, $2 start, $3 end."""

    columns: tuple[Column, ...]
    source: str
    keys: tuple[str, ...]  # the sort key, unique per row (keyset batches resume after it)
    group_by: str = ""


def _c(name: str, kind: ColumnKind, sql: str) -> Column:
    return Column(name, kind, sql)


def _flow(name: str, kind: str, sign: str = "") -> Column:
    """An End User's credits of one kind booked inside the range (sums cast: PostgreSQL
    answers SUM(bigint) as numeric)."""
    return _c(
        name,
        ColumnKind.INT,
        f"{sign}CAST(SUM(CASE WHEN l.created_at >= $2 AND l.kind = '{kind}'"
        " THEN l.amount ELSE 0 END) AS BIGINT)",
    )


INT, FLOAT, TEXT, TIME, JSON = (
    ColumnKind.INT,
    ColumnKind.FLOAT,
    ColumnKind.TEXT,
    ColumnKind.TIME,
    ColumnKind.JSON,
)
_APP_POOLS = "IN (SELECT id FROM credit_pool WHERE application_id = $1)"

QUERIES: dict[ExportType, RowQuery] = {
    ExportType.CONSUMPTION: RowQuery(
        columns=(
            _c("id", INT, "u.id"),
            _c("occurred_at", TIME, "u.occurred_at"),
            _c("created_at", TIME, "u.created_at"),
            _c("end_user_id", INT, "u.end_user_id"),
            _c("end_user_external_id", TEXT, "e.external_id"),
            _c("pool", TEXT, "p.key"),
            _c("feature", TEXT, "u.feature"),
            _c("credits", INT, "u.credits"),
            _c("idempotency_key", TEXT, "u.idempotency_key"),
            _c("metadata", JSON, "u.metadata"),
        ),
        source="usage_event u JOIN end_user e ON e.id = u.end_user_id"
        " JOIN credit_pool p ON p.id = u.pool_id"
        " WHERE u.application_id = $1 AND u.occurred_at >= $2 AND u.occurred_at < $3",
        keys=("u.occurred_at", "u.id"),
    ),
    ExportType.LEDGER: RowQuery(
        columns=(
            _c("id", INT, "l.id"),
            _c("created_at", TIME, "l.created_at"),
            _c("occurred_at", TIME, "l.occurred_at"),
            _c("kind", TEXT, "l.kind"),
            _c("pool", TEXT, "p.key"),
            _c("lot_id", INT, "l.lot_id"),
            _c("package", TEXT, "k.package"),
            _c("end_user_id", INT, "l.end_user_id"),
            _c("end_user_external_id", TEXT, "e.external_id"),
            _c("amount", INT, "l.amount"),
            _c("feature", TEXT, "l.feature"),
            _c("idempotency_key", TEXT, "l.idempotency_key"),
            _c("actor", TEXT, "l.actor"),
            _c("usage_event_id", INT, "l.usage_event_id"),
        ),
        source="ledger_entry l JOIN credit_pool p ON p.id = l.pool_id"
        " JOIN credit_pack k ON k.id = l.lot_id LEFT JOIN end_user e ON e.id = l.end_user_id"
        f" WHERE l.pool_id {_APP_POOLS} AND l.created_at >= $2 AND l.created_at < $3",
        keys=("l.id",),
    ),
    ExportType.ALLOCATIONS: RowQuery(
        columns=(
            _c("end_user_id", INT, "l.end_user_id"),
            _c("end_user_external_id", TEXT, "MIN(e.external_id)"),
            _c("pool", TEXT, "MIN(p.key)"),
            _flow("allocated", "ALLOCATE"),
            _flow("released", "RELEASE", "-"),
            _flow("used", "CONSUME", "-"),
            _flow("expired", "EXPIRE", "-"),
            _c("remaining", INT, "CAST(SUM(l.amount) AS BIGINT)"),
        ),
        source="ledger_entry l JOIN credit_pool p ON p.id = l.pool_id"
        " JOIN end_user e ON e.id = l.end_user_id"
        f" WHERE l.pool_id {_APP_POOLS} AND l.end_user_id IS NOT NULL AND l.created_at < $3",
        keys=("l.end_user_id", "l.pool_id"),
        group_by="l.end_user_id, l.pool_id",
    ),
    ExportType.REQUEST_LOG: RowQuery(
        columns=(
            _c("id", INT, "r.id"),
            _c("time", TIME, "r.time"),
            _c("method", TEXT, "r.method"),
            _c("endpoint", TEXT, "r.endpoint"),
            _c("operation_name", TEXT, "r.operation_name"),
            _c("end_user_id", INT, "r.end_user_id"),
            _c("end_user_external_id", TEXT, "r.end_user_external_id"),
            _c("api_key_prefix", TEXT, "r.api_key_prefix"),
            _c("status", INT, "r.status"),
            _c("outcome", TEXT, "r.outcome"),
            _c("error_code", TEXT, "r.error_code"),
            _c("error_message", TEXT, "r.error_message"),
            _c("latency_ms", FLOAT, "r.latency_ms"),
            _c("request_id", TEXT, "r.request_id"),
            _c("source", TEXT, "r.source"),
        ),
        source="request_log r WHERE r.application_id = $1 AND r.time >= $2 AND r.time < $3",
        keys=("r.time", "r.id"),
    ),
}

BILLING_COLUMNS: tuple[Column, ...] = (
    Column("period_start", TIME),
    Column("period_end", TIME),
    Column("status", TEXT),
    Column("closed_at", TIME),
    Column("pool", TEXT),
    Column("opening_remaining", INT),
    Column("purchased", INT),
    Column("used", INT),
    Column("expired", INT),
    Column("allocated", INT),
    Column("closing_remaining", INT),
    Column("end_user_usage", INT),
    Column("active_end_users", INT),
    Column("packages", JSON),
)


def columns_of(kind: ExportType) -> tuple[Column, ...]:
    return BILLING_COLUMNS if kind == ExportType.BILLING else QUERIES[kind].columns


def iso_time(value: datetime | str | None) -> str | None:
    """A timestamp as exported: ISO 8601, UTC, microseconds, `Z`."""
    if value is None:
        return None
    if isinstance(value, str):  # SQLite keeps text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime(TIME_FORMAT)


def _select(query: RowQuery, postgres: bool) -> str:
    if postgres:  # formatted by the database: the rows go out as they arrive
        exprs = [
            _PG_TIME.format(c.sql)
            if c.kind == TIME
            else f"({c.sql})::text"
            if c.kind == JSON
            else c.sql
            for c in query.columns
        ]
    else:  # raw values, and the sort key last (keyset batches resume after it)
        exprs = [c.sql for c in query.columns] + list(query.keys)
    return "SELECT " + ", ".join(exprs) + " FROM " + query.source


def postgres_statement(query: RowQuery) -> str:
    group = f" GROUP BY {query.group_by}" if query.group_by else ""
    return _select(query, True) + group + " ORDER BY " + ", ".join(query.keys)


def _keyset_condition(keys: Sequence[str], first_param: int) -> str:
    """`(k0, k1) > ($n, $n+1)` spelled out (an index can serve each branch)."""
    branches = []
    for i in range(len(keys)):
        equal = [f"{keys[j]} = ${first_param + j}" for j in range(i)]
        branches.append(" AND ".join([*equal, f"{keys[i]} > ${first_param + i}"]))
    return "(" + " OR ".join(f"({b})" for b in branches) + ")"


def sqlite_statement(query: RowQuery, resume: bool) -> str:
    statement = _select(query, False)
    if resume:
        statement += " AND " + _keyset_condition(query.keys, 4)
    if query.group_by:
        statement += f" GROUP BY {query.group_by}"
    statement += " ORDER BY " + ", ".join(query.keys) + f" LIMIT {BATCH_ROWS}"
    return to_sqlite(statement)


async def _postgres_batches(
    dsn: str, query: RowQuery, spec: ExportSpec
) -> AsyncIterator[Sequence[Sequence[Any]]]:
    conn = await asyncpg.connect(dsn, server_settings={"application_name": SESSION_NAME})
    closed = False
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # Plan for reading every row (a cursor is planned for its first 10% by default).
            await conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")
            cursor = await conn.cursor(
                postgres_statement(query), spec.application_id, spec.start, spec.end
            )
            while rows := await cursor.fetch(BATCH_ROWS):
                yield rows
        await conn.close()
        closed = True
    finally:
        if not closed:  # cancelled or failed mid-stream: drop the session at once
            conn.terminate()


async def _sqlite_batches(
    query: RowQuery, spec: ExportSpec
) -> AsyncIterator[Sequence[Sequence[Any]]]:
    conn = connections.get("default")
    db = Sql(conn)
    bounds = [time_param(db, spec.start), time_param(db, spec.end)]
    width = len(query.columns)
    times = [i for i, c in enumerate(query.columns) if c.kind == TIME]
    last: list[Any] | None = None
    while True:
        args: list[Any] = [spec.application_id, *bounds, *(last or [])]
        _, rows = await conn.execute_query(sqlite_statement(query, last is not None), args)
        if not rows:
            return
        batch = []
        for row in rows:
            values = list(row)
            for i in times:
                values[i] = iso_time(values[i])
            batch.append(values[:width])
        last = list(rows[-1])[width:]
        yield batch
        if len(rows) < BATCH_ROWS:
            return


async def _billing_batches(spec: ExportSpec) -> AsyncIterator[Sequence[Sequence[Any]]]:
    """Periods are few (one a month): each is read or computed as the API shows it."""
    start = month_start(spec.start)
    if start < spec.start:
        start = next_month(start)  # only periods starting inside the range
    created = await single_statement(
        lambda db: db.value("SELECT created_at FROM application WHERE id = $1", spec.application_id)
    )
    start = max(start, month_start(as_utc(created)))  # none before the application
    now = datetime.now(UTC)
    while start < spec.end and start <= now:
        period = await billing_period(spec.application_id, start)
        if period is not None:
            yield [
                [
                    iso_time(period.start),
                    iso_time(period.end),
                    period.status.value,
                    iso_time(period.closed_at),
                    pool.pool,
                    pool.opening_remaining,
                    pool.purchased,
                    pool.used,
                    pool.expired,
                    pool.allocated,
                    pool.closing_remaining,
                    pool.end_user_usage,
                    pool.active_end_users,
                    dumps(
                        [
                            {
                                "package": p.package,
                                "purchased": p.purchased,
                                "used": p.used,
                                "expired": p.expired,
                                "remaining": p.remaining,
                            }
                            for p in pool.packages
                        ]
                    ),
                ]
                for pool in period.pools
            ]
        start = next_month(start)


def export_batches(
    spec: ExportSpec, postgres_dsn: str | None
) -> AsyncIterator[Sequence[Sequence[Any]]]:
    """The export's rows, a batch at a time, in `columns_of(spec.type)` order; on
    PostgreSQL (`postgres_dsn` given) over a connection of the export's own, closed at the
    end or when the consumer stops early (`aclose()`)."""
    if spec.type == ExportType.BILLING:
        return _billing_batches(spec)
    query = QUERIES[spec.type]
    if postgres_dsn is not None:
        return _postgres_batches(postgres_dsn, query, spec)
    return _sqlite_batches(query, spec)
