"""The request log (docs/request-log.md): one row per API request, WebSocket connection or record
pushed by another platform service.

`application_id` is NULL only when nothing in the request names an application: no
credential, a malformed one, or an organization key on a request that addresses none of its
applications (`organization_id` is kept then). Like the ledger's records, the row has no
foreign keys: the log is written in batches off the request path and must never wait on, or
lock, the rows it mentions, and an entry must be kept even for an application id a forged
token claimed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from tortoise import connections, fields
from tortoise.models import Model

from models import json_sql
from models.consumption import Granularity, bucket_range, spikes
from models.errors import ValidationFailed
from models.sql import (
    Row,
    Sql,
    delete_older_than,
    single_statement,
    transaction,
    values_list,
    written_or_plain,
)

MAX_MESSAGE = 1_000
MAX_ENDPOINT = 300
MAX_PAGE = 500


class Outcome(StrEnum):
    OK = "OK"
    CLIENT_ERROR = "CLIENT_ERROR"
    AUTH_ERROR = "AUTH_ERROR"
    SERVER_ERROR = "SERVER_ERROR"


class LogSource(StrEnum):
    API = "api"  # logged by this service's middleware
    INGEST = "ingest"  # pushed by another platform service to POST /v1/request-logs
    WEBHOOK = "webhook"  # a webhook delivery this service made (an outgoing call)


class RequestLogEntry(Model):
    """One request. `endpoint` is `METHOD /path`, and for GraphQL `POST /graphql` followed by
    the operation's root field names; `api_key_prefix` is the key id (`ug_<key id>_...`)."""

    id = fields.BigIntField(primary_key=True)
    application_id = fields.BigIntField(null=True)
    organization_id = fields.BigIntField(null=True)
    time = fields.DatetimeField()
    method = fields.CharField(max_length=16)
    endpoint = fields.CharField(max_length=MAX_ENDPOINT)
    operation_name = fields.CharField(max_length=200, null=True)
    end_user_id = fields.BigIntField(null=True)
    end_user_external_id = fields.CharField(max_length=200, null=True)
    api_key_prefix = fields.CharField(max_length=32, null=True)
    status = fields.SmallIntField()
    outcome = fields.CharEnumField(Outcome, max_length=16)
    error_code = fields.CharField(max_length=64, null=True)
    error_message = fields.CharField(max_length=MAX_MESSAGE, null=True)
    latency_ms = fields.FloatField()
    request_id = fields.CharField(max_length=64)
    source = fields.CharEnumField(LogSource, max_length=16)

    class Meta:
        table = "request_log"
        # Newest-first keyset pages per application by (time, id), and one index per
        # selective filter so a filtered page reads only matching rows; `time` alone for
        # the retention job.
        indexes = (
            ("application_id", "time", "id"),
            ("application_id", "outcome", "time", "id"),
            ("application_id", "end_user_id", "time", "id"),
            ("application_id", "api_key_prefix", "time", "id"),
            ("application_id", "endpoint", "time", "id"),
            ("time",),
        )


class RequestVolume(Model):
    """A change of an application's number of requests in one UTC hour with one outcome, on
    PostgreSQL: triggers on `request_log` add one row per statement in the writing
    transaction (a batch's inserts, retention's deletes), so the sums are exact in any
    snapshot and writers never wait on each other; `merge_request_volume` folds the rows of
    each hour and outcome into one. The request volume reads these instead of the log."""

    id = fields.BigIntField(primary_key=True)
    application_id = fields.BigIntField()
    hour = fields.DatetimeField()
    outcome = fields.CharField(max_length=16)
    requests = fields.BigIntField()
    merged = fields.BooleanField(default=False)  # False: a trigger's delta, not merged yet

    class Meta:
        table = "request_volume"
        indexes = (("application_id", "hour"),)


COLUMNS = (
    "application_id",
    "organization_id",
    "time",
    "method",
    "endpoint",
    "operation_name",
    "end_user_id",
    "end_user_external_id",
    "api_key_prefix",
    "status",
    "outcome",
    "error_code",
    "error_message",
    "latency_ms",
    "request_id",
    "source",
)
_PG_TYPES = (
    "bigint",
    "bigint",
    "timestamptz",
    "text",
    "text",
    "text",
    "bigint",
    "text",
    "text",
    "smallint",
    "text",
    "text",
    "text",
    "float8",
    "text",
    "text",
)
_COLUMN_LIST = ", ".join(f'"{c}"' for c in COLUMNS)
_SELECT = f"SELECT id, {_COLUMN_LIST}"
# PostgreSQL: one statement for any number of rows, one array parameter per column.
_PG_INSERT = (
    f"INSERT INTO request_log ({_COLUMN_LIST}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_PG_TYPES, start=1))
    + ") RETURNING id"
)
_SQLITE_CHUNK = 500  # 500 rows x 16 parameters, well under SQLite's variable limit


class LogRow(NamedTuple):
    """A row to insert, in COLUMNS order."""

    application_id: int | None
    organization_id: int | None
    time: datetime
    method: str
    endpoint: str
    operation_name: str | None
    end_user_id: int | None
    end_user_external_id: str | None
    api_key_prefix: str | None
    status: int
    outcome: str
    error_code: str | None
    error_message: str | None
    latency_ms: float
    request_id: str
    source: str


def clip(value: str | None, limit: int) -> str | None:
    return value if value is None or len(value) <= limit else value[: limit - 1] + "…"


def outcome_for(status: int, error_code: str | None = None) -> Outcome:
    """The outcome rule: 401/403 (and the credential codes) are AUTH_ERROR, other 4xx and a
    200 carrying an expected error are CLIENT_ERROR, 5xx (and GraphQL's INTERNAL) are
    SERVER_ERROR, anything else OK."""
    if status >= 500 or error_code == "INTERNAL":
        return Outcome.SERVER_ERROR
    if status in (401, 403) or error_code in AUTH_CODES:
        return Outcome.AUTH_ERROR
    if status >= 400 or error_code is not None:
        return Outcome.CLIENT_ERROR
    return Outcome.OK


# Codes that say the caller's credential (key, token, temporary code) was refused.
AUTH_CODES = frozenset(
    {"UNAUTHENTICATED", "API_KEY_REVOKED", "TOKEN_EXPIRED", "FORBIDDEN", "EXPIRED"}
)


def _storable(row: LogRow) -> LogRow:
    """PostgreSQL text cannot hold NUL: a logged value carrying one (a path, an operation
    name, an ingested field) is stored with U+FFFD in its place, on both backends alike;
    otherwise the whole batch would be refused, and retried, forever."""
    if not any(isinstance(value, str) and "\x00" in value for value in row):
        return row
    return LogRow(*(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row))


async def insert_entries(rows: list[LogRow], *, returning: bool = True) -> list[int]:
    """Inserts rows in one statement per chunk (one in all on PostgreSQL); their ids in
    order, or [] without `returning` (PostgreSQL then uses COPY, about half the database
    work). Rows are appended only: the log is never updated, only trimmed by retention."""
    if not rows:
        return []
    rows = [_storable(row) for row in rows]
    client = connections.get("default")
    if client.capabilities.dialect == "postgres" and not returning:
        async with client.acquire_connection() as conn:
            await conn.copy_records_to_table("request_log", records=rows, columns=COLUMNS)
        return []

    async def work(db: Sql) -> list[int]:
        if db.postgres:
            columns = [list(column) for column in zip(*rows, strict=True)]
            return [r["id"] for r in await db.rows(_PG_INSERT, *columns)]
        ids: list[int] = []
        for start in range(0, len(rows), _SQLITE_CHUNK):
            chunk = rows[start : start + _SQLITE_CHUNK]
            statement = (
                f"INSERT INTO request_log ({_COLUMN_LIST}) VALUES "
                f"{values_list(len(chunk), len(COLUMNS))} RETURNING id"
            )
            params = [value for row in chunk for value in row]
            ids.extend(r["id"] for r in await db.rows(statement, *params))
        return ids

    return await single_statement(work)


def as_utc(value: Any) -> datetime:
    """A timestamp read by raw SQL (SQLite answers text) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Every given condition must hold. `status_class` is the hundreds digit (4: 4xx)."""

    since: datetime | None = None
    until: datetime | None = None
    status_class: int | None = None
    outcome: Outcome | None = None
    endpoint: str | None = None
    end_user_id: int | None = None
    api_key_prefix: str | None = None

    def validate(self) -> None:
        if self.status_class is not None and not 1 <= self.status_class <= 5:
            raise ValidationFailed("statusClass must be 1 to 5", field="statusClass")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValidationFailed(f"{name} must carry a time zone", field=name)

    def matches(self, entry: LogRow) -> bool:
        """The same conditions on an entry in memory (the live tail)."""
        if self.since is not None and entry.time < self.since:
            return False
        if self.until is not None and entry.time >= self.until:
            return False
        if self.status_class is not None and entry.status // 100 != self.status_class:
            return False
        checks = (
            (self.outcome, entry.outcome),
            (self.endpoint, entry.endpoint),
            (self.end_user_id, entry.end_user_id),
            (self.api_key_prefix, entry.api_key_prefix),
        )
        return all(want is None or have == want for want, have in checks)

    def sql(self, first_param: int) -> tuple[str, list[Any]]:
        conditions: list[str] = []
        params: list[Any] = []

        def add(condition: str, value: Any) -> None:
            params.append(value)
            conditions.append(condition.replace("?", f"${first_param + len(params) - 1}"))

        if self.since is not None:
            add('"time" >= ?', self.since.astimezone(UTC))
        if self.until is not None:
            add('"time" < ?', self.until.astimezone(UTC))
        if self.status_class is not None:
            add("status >= ?", self.status_class * 100)
            add("status < ?", self.status_class * 100 + 100)
            if self.status_class >= 4:  # as the error entries' index is defined (0021)
                conditions.append("status >= 400")
        if self.outcome is not None:
            add("outcome = ?", self.outcome.value)
        if self.endpoint is not None:
            add("endpoint = ?", self.endpoint)
        if self.end_user_id is not None:
            add("end_user_id = ?", self.end_user_id)
        if self.api_key_prefix is not None:
            add("api_key_prefix = ?", self.api_key_prefix)
        return "".join(f" AND {c}" for c in conditions), params


def entry_dict(row: Row) -> dict[str, Any]:
    row = dict(row)
    row["time"] = as_utc(row["time"])
    row["outcome"] = Outcome(row["outcome"])
    return row


# An entry's fields as the API names them, each as the JSON text PostgreSQL writes for it
# (models/json_sql.py), joined into an object by concatenation (json_build_object looks up
# each value's type on every call: a fifth of a page's statement); an entry whose row breaks
# `_ENTRY_FITS` is written by Python.
ENTRY_FIELD_SQL = {
    "id": json_sql.name_text("id::text"),
    "time": json_sql.name_text(json_sql.iso_time('"time"')),
    "method": json_sql.json_text("method"),
    "endpoint": json_sql.json_text("endpoint"),
    "operationName": json_sql.json_text("operation_name"),
    "endUserExternalId": json_sql.json_text("end_user_external_id"),
    "apiKeyPrefix": json_sql.json_text("api_key_prefix"),
    "status": "COALESCE(status::text, 'null')",
    "outcome": json_sql.name_text("outcome"),
    "errorCode": json_sql.json_text("error_code"),
    "errorMessage": json_sql.json_text("error_message"),
    "latencyMs": "latency_ms::text",
    "requestId": json_sql.json_text("request_id"),
    "source": json_sql.json_text("source"),
}
_ENTRY_FITS = (
    f"{json_sql.finite('latency_ms')} AND method IS NOT NULL AND endpoint IS NOT NULL"
    " AND request_id IS NOT NULL AND source IS NOT NULL AND outcome IS NOT NULL"
)
# (name in the answer, field of ENTRY_FIELD_SQL or `__typename`) of an entry's JSON
EntryJson = tuple[tuple[str, str], ...]


def _entry_json_sql(entries: EntryJson) -> str:
    pairs = [
        (
            name,
            json_sql.type_name_text("RequestLogEntry")
            if field == "__typename"
            else ENTRY_FIELD_SQL[field],
        )
        for name, field in entries
    ]
    return f", CASE WHEN {_ENTRY_FITS} THEN {json_sql.text_object(pairs)} END AS j"


async def entry_page(
    application_id: int,
    first: int,
    after: tuple[datetime, int] | None = None,
    where: LogFilter | None = None,
    as_json: EntryJson | None = None,
) -> list[Row]:
    """Up to `first` + 1 entries of an application, newest first (by time, then id), after
    the keyset cursor `(time, id)` when given; the extra row tells that a next page exists.
    On PostgreSQL with `as_json`, when the database could write every entry's JSON text for
    those fields, each entry is only its id, time and that text ("j")."""
    if not 0 <= first <= MAX_PAGE:
        raise ValidationFailed(f"first must be between 0 and {MAX_PAGE}", field="first")
    where = where or LogFilter()
    where.validate()
    params: list[Any] = [application_id]
    keyset = ""
    if after is not None:
        params.extend([after[0].astimezone(UTC), after[1]])
        keyset = ' AND ("time", id) < ($2, $3)'
    conditions, extra = where.sql(len(params) + 1)
    params.extend(extra)
    params.append(first + 1)
    statement = (
        f"{{columns}} FROM request_log WHERE application_id = $1{keyset}{conditions}"
        f' ORDER BY "time" DESC, id DESC LIMIT ${len(params)}'
    )
    written = None
    if as_json is not None:
        written = statement.replace("{columns}", f'SELECT id, "time"{_entry_json_sql(as_json)}')
    rows, as_written = await written_or_plain(
        written,
        statement.replace("{columns}", _SELECT),
        params,
        lambda rows: any(row["j"] is None for row in rows),
        # unfiltered, a page reads the (application_id, time, id) index whatever the
        # application: planned once; a filter's best index depends on how selective it is
        planned_once=not conditions,
    )
    if as_written:  # asyncpg's Records as they come (PostgreSQL's times are aware UTC)
        return rows
    return [entry_dict(row) for row in rows]


_SQLITE_TRUNC = {
    Granularity.HOUR: "strftime('%Y-%m-%d %H:00:00', \"time\")",
    Granularity.DAY: "strftime('%Y-%m-%d 00:00:00', \"time\")",
    Granularity.WEEK: "date(\"time\", 'weekday 0', '-6 days') || ' 00:00:00'",
    Granularity.MONTH: "strftime('%Y-%m-01 00:00:00', \"time\")",
}


@dataclass(slots=True)
class VolumeBucket:
    start: datetime
    requests: int = 0
    by_outcome: dict[Outcome, int] = field(default_factory=dict)
    spike: bool = False


async def request_volume(
    application_id: int, since: datetime, until: datetime, granularity: Granularity
) -> list[VolumeBucket]:
    """Requests per UTC bucket over the range widened to whole buckets (as consumption
    series are), every bucket present, with the count of each outcome; `spike` follows the
    consumption series' rule (models.consumption.spikes) on the request counts."""
    span = bucket_range(since, until, granularity)
    buckets = {start: VolumeBucket(start) for start in span.starts()}

    async def work(db: Sql) -> list[Row]:
        if db.postgres:  # the hourly counts the triggers keep: a row per hour and outcome
            unit = granularity.value.lower()
            return await db.records(
                f"SELECT date_trunc('{unit}', hour AT TIME ZONE 'UTC') AS bucket, outcome,"
                " CAST(SUM(requests) AS BIGINT) AS n FROM request_volume"
                " WHERE application_id = $1 AND hour >= $2 AND hour < $3"
                " GROUP BY 1, 2 HAVING SUM(requests) <> 0",
                application_id,
                span.start,
                span.end,
            )
        trunc = _SQLITE_TRUNC[granularity]
        return await db.records(
            f"SELECT {trunc} AS bucket, outcome, count(*) AS n FROM request_log"
            ' WHERE application_id = $1 AND "time" >= $2 AND "time" < $3'
            " GROUP BY 1, 2",
            application_id,
            span.start,
            span.end,
        )

    for row in await single_statement(work):
        bucket = buckets.get(as_utc(row["bucket"]))
        if bucket is not None:
            outcome = Outcome(row["outcome"])
            bucket.requests += row["n"]
            bucket.by_outcome[outcome] = bucket.by_outcome.get(outcome, 0) + row["n"]
    ordered = list(buckets.values())
    for bucket, spike in zip(ordered, spikes([b.requests for b in ordered]), strict=True):
        bucket.spike = spike
    return ordered


RETENTION_BATCH = 10_000
# (a key of our own for pg_try_advisory_xact_lock: one merger at a time)
_MERGE_LOCK = 7_301_911


async def merge_request_volume() -> None:
    """One `request_volume` row per application, hour and outcome again (PostgreSQL): the
    rows of every hour and outcome a delta touched since the last merge are deleted and their
    sum written back, in one statement (one snapshot), so a delta committed meanwhile is
    neither lost nor counted twice; an hour whose requests retention deleted leaves none.
    One process merges at a time; the others skip."""

    async def work(db: Sql) -> None:
        if not db.postgres:
            return
        if not await db.value("SELECT pg_try_advisory_xact_lock($1)", _MERGE_LOCK):
            return
        await db.run(
            "WITH touched AS (SELECT DISTINCT application_id, hour, outcome FROM request_volume"
            " WHERE NOT merged), gone AS (DELETE FROM request_volume v USING touched t"
            " WHERE v.application_id = t.application_id AND v.hour = t.hour"
            " AND v.outcome = t.outcome RETURNING v.application_id, v.hour, v.outcome, v.requests)"
            " INSERT INTO request_volume (application_id, hour, outcome, requests, merged)"
            " SELECT application_id, hour, outcome, SUM(requests), TRUE FROM gone"
            " GROUP BY 1, 2, 3 HAVING SUM(requests) <> 0"
        )

    await transaction(work)


async def delete_entries_before(cutoff: datetime) -> int:
    """Deletes entries older than `cutoff` (the retention job); the number deleted."""
    return await delete_older_than("request_log", "time", cutoff.astimezone(UTC), RETENTION_BATCH)
