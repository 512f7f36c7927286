"""Billing periods (docs/billing-and-export.md#billing-periods): calendar months in UTC, one
summary per application and month.

A period holds the ledger entries *booked* in it: their `created_at`, the database clock
when the entry was written, not `occurred_at`, which an integrator may back-date. So a
consumption sent today with last month's `occurredAt` counts in today's period, and a closed
period never gains an entry.

The open period (and an ended one not closed yet) is computed live from the ledger. Once a
month has ended, `close_ended_periods` writes its figures once into `billing_period`: the
row is keyed by (application, period start) and inserted with ON CONFLICT DO NOTHING, so any
number of processes may close at once and exactly one row is written; a trigger refuses
every UPDATE or DELETE of it, so it never changes.

A period is closed only when every entry booked before its end is committed: `created_at`
is the start of the writing transaction on PostgreSQL, so a transaction that began just
before midnight may commit just after it. The closer waits `delay` past the end and, on
PostgreSQL, until no transaction that began before the end is still running."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model

from models.errors import ValidationFailed
from models.rollups import BILLING_WATERMARK, in_tail
from models.sql import Sql, dumps, loads, single_statement, transaction
from models.tenancy import Application
from models.webhook_events import WebhookEvent, enqueue_event
from models.webhooks import WebhookEventType

MAX_PERIODS_PAGE = 120
DEFAULT_CLOSE_DELAY = timedelta(minutes=5)


class BillingPeriodRecord(Model):
    """A closed period's figures as written at closing (never updated: a trigger refuses it)."""

    id = fields.BigIntField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="billing_periods", on_delete=fields.RESTRICT
    )
    period_start = fields.DatetimeField()
    period_end = fields.DatetimeField()
    closed_at = fields.DatetimeField()
    figures = fields.JSONField()

    class Meta:
        table = "billing_period"
        unique_together = (("application", "period_start"),)


class PeriodStatus(StrEnum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class PackageFigures:
    """One package's lots in one pool: remaining is at the period's end, so
    remaining = remaining at the start + purchased - used - expired."""

    package: str | None
    purchased: int
    used: int
    expired: int
    remaining: int


@dataclass(frozen=True, slots=True)
class PoolFigures:
    pool: str
    name: str
    opening_remaining: int
    purchased: int
    used: int
    expired: int
    allocated: int  # net of releases
    closing_remaining: int
    end_user_usage: int
    active_end_users: int
    packages: list[PackageFigures] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    start: datetime
    end: datetime
    status: PeriodStatus
    closed_at: datetime | None
    pools: list[PoolFigures]
    end_user_usage: int
    active_end_users: int

    def figures_json(self) -> str:
        """What a closed record stores (everything but the period's key and closing time)."""
        return dumps(
            {
                "pools": [asdict(pool) for pool in self.pools],
                "end_user_usage": self.end_user_usage,
                "active_end_users": self.active_end_users,
            }
        )

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> BillingPeriod:
        stored = loads(row["figures"])
        pools = [
            PoolFigures(
                **{k: v for k, v in pool.items() if k != "packages"},
                packages=[PackageFigures(**package) for package in pool["packages"]],
            )
            for pool in stored["pools"]
        ]
        return cls(
            start=as_utc(row["period_start"]),
            end=as_utc(row["period_end"]),
            status=PeriodStatus.CLOSED,
            closed_at=as_utc(row["closed_at"]),
            pools=pools,
            end_user_usage=stored["end_user_usage"],
            active_end_users=stored["active_end_users"],
        )


# ------------------------------------------------------------------------------- calendar


def as_utc(value: datetime | str) -> datetime:
    """A stored timestamp as an aware UTC datetime (SQLite hands back text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def time_param(db: Sql, moment: datetime) -> datetime | str:
    """A time to compare stored timestamps with, by `<` or `>=`. SQLite compares the text:
    rows hold `...:SS+00:00`, `...:SS.fff+00:00` (its clock) or `...:SS.ffffff+00:00`, so the
    bound is written with the fewest digits that keep its value, which orders it right
    against all three (`.800` is below `.800000` as text and equal as a time)."""
    if db.postgres:
        return moment
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond % 1000:
        text += f".{moment.microsecond:06d}"
    elif moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "+00:00"


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def previous_month(start: datetime) -> datetime:
    return datetime(start.year - (start.month == 1), (start.month - 2) % 12 + 1, 1, tzinfo=UTC)


def validate_period_start(start: datetime) -> datetime:
    """A period is named by its first instant: midnight UTC on the first of a month."""
    if start.tzinfo is None:
        raise ValidationFailed("start must carry a time zone", field="start")
    start = start.astimezone(UTC)
    if start != month_start(start):
        raise ValidationFailed(
            "start must be the first instant of a month in UTC, e.g. 2026-11-01T00:00:00Z",
            field="start",
        )
    return start


# ---------------------------------------------------------------------------- the figures

# A ledger entry (l) booked since $2 as a period's flows sum it: its lot, whether it is the
# lot's purchase after the period ($3 on), its change of the lot's remaining, and its part of
# the period's purchased, used, expired and allocated.
ENTRY_COLUMNS = """l.lot_id,
    CASE WHEN l.created_at >= $3 AND l.kind = 'PURCHASE' THEN 1 ELSE 0 END AS bought_after,
    CASE WHEN l.kind IN ('PURCHASE', 'CONSUME', 'EXPIRE') THEN l.amount ELSE 0 END AS changed,
    CASE WHEN l.created_at < $3 AND l.kind = 'PURCHASE' THEN l.amount ELSE 0 END AS purchased,
    CASE WHEN l.created_at < $3 AND l.kind = 'CONSUME' THEN -l.amount ELSE 0 END AS used,
    CASE WHEN l.created_at < $3 AND l.kind = 'EXPIRE' THEN -l.amount ELSE 0 END AS expired,
    CASE WHEN l.created_at < $3 AND l.kind IN ('ALLOCATE', 'RELEASE') THEN l.amount ELSE 0 END
      AS allocated"""
# The entries of a period's application booked since $2: the rollups' days (folded
# entries, `models.rollups.BillingRollupDay`), then the tail (the entries created since
# the billing rollups' watermark), each with its lot and the sums `_FLOWS` groups; those
# booked from $3 on count only as a lot's change since then and its purchase after the
# period.
_ENTRIES = f"""
  SELECT r.lot_id, CASE WHEN r.day >= $3 THEN r.purchases ELSE 0 END AS bought_after,
    r.changed,
    CASE WHEN r.day < $3 THEN r.purchased ELSE 0 END AS purchased,
    CASE WHEN r.day < $3 THEN r.used ELSE 0 END AS used,
    CASE WHEN r.day < $3 THEN r.expired ELSE 0 END AS expired,
    CASE WHEN r.day < $3 THEN r.allocated ELSE 0 END AS allocated
  FROM credit_pool p JOIN billing_rollup_day r ON r.pool_id = p.id AND r.day >= $2
  WHERE p.application_id = $1
  UNION ALL
  SELECT {ENTRY_COLUMNS}
  FROM credit_pool p JOIN ledger_entry l ON l.pool_id = p.id AND {in_tail("l", BILLING_WATERMARK)}
    AND l.created_at >= $2
  WHERE p.application_id = $1 AND l.lot_id IS NOT NULL
"""
# A period's flows per pool and package, and its opening remaining: each lot's remaining
# now (its counters equal its ledger sums, `usagegraph verify`) less what the entries booked
# since the period's start changed, so a period reads what was booked since it began, not
# the application's whole history. A lot bought after the period has no part in it.


def flows_statement(entries: str) -> str:
    """The flows statement over `entries`, a SELECT of the application's entries booked
    since $2 as (lot_id, bought_after, changed, purchased, used, expired, allocated)."""
    return f"""
WITH lots AS (
  SELECT k.id, k.pool_id, k.package, k.credits - k.used - k.expired AS remaining
  FROM credit_pack k JOIN credit_pool p ON p.id = k.pool_id
  WHERE p.application_id = $1
), since AS (
  SELECT e.lot_id, SUM(e.bought_after) AS bought_after, SUM(e.changed) AS changed,
    SUM(e.purchased) AS purchased, SUM(e.used) AS used, SUM(e.expired) AS expired,
    SUM(e.allocated) AS allocated
  FROM ({entries}) e GROUP BY e.lot_id
)
SELECT lots.pool_id, lots.package,
  SUM(lots.remaining - COALESCE(since.changed, 0)) AS opening,
  SUM(COALESCE(since.purchased, 0)) AS purchased, SUM(COALESCE(since.used, 0)) AS used,
  SUM(COALESCE(since.expired, 0)) AS expired, SUM(COALESCE(since.allocated, 0)) AS allocated
FROM lots LEFT JOIN since ON since.lot_id = lots.id
WHERE COALESCE(since.bought_after, 0) = 0
GROUP BY lots.pool_id, lots.package
"""


_FLOWS = flows_statement(_ENTRIES)
# The End Users who consumed in the period, per pool and in all (pool NULL): the folded
# months' (`models.rollups.BillingActiveMonth`) and the tail's.
_ACTIVE = f"""
WITH pairs AS (
  SELECT a.pool_id, a.end_user_id
  FROM credit_pool p JOIN billing_active_month a ON a.pool_id = p.id AND a.month = $2
  WHERE p.application_id = $1
  UNION
  SELECT l.pool_id, l.end_user_id
  FROM credit_pool p JOIN ledger_entry l ON l.pool_id = p.id AND {in_tail("l", BILLING_WATERMARK)}
    AND l.created_at >= $2 AND l.created_at < $3
  WHERE p.application_id = $1 AND l.kind = 'CONSUME' AND l.end_user_id IS NOT NULL
)
SELECT pool_id, COUNT(*) AS active FROM pairs GROUP BY pool_id
UNION ALL SELECT NULL, COUNT(DISTINCT end_user_id) FROM pairs
"""
_POOLS = """
SELECT id, key, name, created_at FROM credit_pool WHERE application_id = $1 ORDER BY id
"""


async def compute_period(db: Sql, application_id: int, start: datetime) -> BillingPeriod:
    """The period's figures from the ledger entries booked before its end: opening remaining
    = purchased - used - expired before the start, then the period's flows; per package
    (lot package) and pool; active End Users consumed at least once in the period."""
    end = next_month(start)
    bounds = (time_param(db, start), time_param(db, end))
    flows = await db.rows(_FLOWS, application_id, *bounds)
    active = {
        row["pool_id"]: row["active"] for row in await db.rows(_ACTIVE, application_id, *bounds)
    }
    active_total = active.pop(None, 0) or 0
    by_pool: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in flows:
        by_pool[row["pool_id"]].append(row)
    pools: list[PoolFigures] = []
    for pool in await db.rows(_POOLS, application_id):
        rows = by_pool.get(pool["id"], [])
        if not rows and as_utc(pool["created_at"]) >= end:
            continue  # the pool did not exist in this period
        pools.append(_pool_figures(pool, rows, active.get(pool["id"], 0)))
    return BillingPeriod(
        start=start,
        end=end,
        status=PeriodStatus.OPEN,
        closed_at=None,
        pools=pools,
        end_user_usage=sum(pool.end_user_usage for pool in pools),
        active_end_users=int(active_total),
    )


def _pool_figures(pool: dict[str, Any], rows: list[dict[str, Any]], active: int) -> PoolFigures:
    packages = []
    for row in rows:
        opening, purchased, used, expired = (
            int(row[name] or 0) for name in ("opening", "purchased", "used", "expired")
        )
        remaining = opening + purchased - used - expired
        if (opening, purchased, used, expired) != (0, 0, 0, 0):
            packages.append(PackageFigures(row["package"], purchased, used, expired, remaining))
    # Named packages in name order, lots without a package last.
    packages.sort(key=lambda p: (p.package is None, p.package or ""))

    def total(name: str) -> int:
        return sum(int(row[name] or 0) for row in rows)

    opening = total("opening")
    used = total("used")
    return PoolFigures(
        pool=pool["key"],
        name=pool["name"],
        opening_remaining=opening,
        purchased=total("purchased"),
        used=used,
        expired=total("expired"),
        allocated=total("allocated"),
        closing_remaining=opening + total("purchased") - used - total("expired"),
        end_user_usage=used,  # every consumption is an End User's
        active_end_users=active,
        packages=packages,
    )


# ------------------------------------------------------------------------------ reading


async def _application_created(db: Sql, application_id: int) -> datetime:
    created = await db.value("SELECT created_at FROM application WHERE id = $1", application_id)
    assert created is not None, "the caller checked the application is visible"
    return as_utc(created)


async def _records(
    db: Sql, application_id: int, starts: list[datetime]
) -> dict[datetime, BillingPeriod]:
    if not starts:
        return {}
    rows = await db.rows(
        "SELECT period_start, period_end, closed_at, figures FROM billing_period"
        " WHERE application_id = $1 AND period_start >= $2 AND period_start <= $3",
        application_id,
        min(starts),
        max(starts),
    )
    found = (BillingPeriod.from_record(row) for row in rows)
    return {period.start: period for period in found}


async def billing_periods(
    application_id: int, first: int = 12, now: datetime | None = None
) -> list[BillingPeriod]:
    """The application's periods, newest first, from the current month back to the month it
    was created: closed ones as recorded, the others computed live."""
    if not 1 <= first <= MAX_PERIODS_PAGE:
        raise ValidationFailed(f"first must be between 1 and {MAX_PERIODS_PAGE}", field="first")

    async def work(db: Sql) -> list[BillingPeriod]:
        oldest = month_start(await _application_created(db, application_id))
        starts: list[datetime] = []
        start = month_start(now or datetime.now(UTC))
        while start >= oldest and len(starts) < first:
            starts.append(start)
            start = previous_month(start)
        closed = await _records(db, application_id, starts)
        return [
            closed.get(start) or await compute_period(db, application_id, start) for start in starts
        ]

    return await transaction(work)


async def billing_period(
    application_id: int, start: datetime, now: datetime | None = None
) -> BillingPeriod | None:
    """One period by its start; None before the application existed or in the future."""
    start = validate_period_start(start)

    async def work(db: Sql) -> BillingPeriod | None:
        oldest = month_start(await _application_created(db, application_id))
        if not oldest <= start <= month_start(now or datetime.now(UTC)):
            return None
        closed = await _records(db, application_id, [start])
        return closed.get(start) or await compute_period(db, application_id, start)

    return await transaction(work)


# ------------------------------------------------------------------------------ closing


async def close_period(application_id: int, start: datetime) -> bool:
    """Writes the period's closed record unless one exists; True when this call wrote it.
    Safe under any concurrency: the unique key lets exactly one insert through, and the
    figures every closer computes are the same (nothing is booked in an ended period)."""
    start = validate_period_start(start)

    async def work(db: Sql) -> bool:
        exists = await db.value(
            "SELECT 1 FROM billing_period WHERE application_id = $1 AND period_start = $2",
            application_id,
            start,
        )
        if exists:
            return False
        period = await compute_period(db, application_id, start)
        written = await db.value(
            "INSERT INTO billing_period (application_id, period_start, period_end, closed_at,"
            " figures) VALUES ($1, $2, $3, now(), $4)"
            " ON CONFLICT (application_id, period_start) DO NOTHING RETURNING id",
            application_id,
            start,
            period.end,
            period.figures_json(),
        )
        if written is not None:
            await enqueue_event(db, period_closed_event(application_id, period))
        return written is not None

    return await transaction(work)


def _camel(value: Any) -> Any:
    """Figures as GraphQL names them (`closingRemaining`), for a webhook's data."""
    if isinstance(value, dict):
        return {
            re.sub(r"_(\w)", lambda m: m.group(1).upper(), key): _camel(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_camel(item) for item in value]
    return value


def period_closed_event(application_id: int, period: BillingPeriod) -> WebhookEvent:
    """The `billing_period.closed` webhook event: the closed record's figures."""
    data = {
        "applicationId": str(application_id),
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        **_camel(loads(period.figures_json())),
    }
    at = datetime.now(UTC).isoformat()
    return WebhookEvent(application_id, WebhookEventType.BILLING_PERIOD_CLOSED, at, data)


async def close_cutoff(delay: timedelta = DEFAULT_CLOSE_DELAY) -> datetime:
    """The latest period end that may be closed now: `delay` ago by the database clock and,
    on PostgreSQL, no later than the start of the oldest transaction still running (its
    entries will carry that start as their `created_at`)."""

    async def work(db: Sql) -> datetime:
        if db.postgres:
            # A transaction open for more than an hour is no ledger write (those take
            # milliseconds): a forgotten session must not hold closing back for ever.
            row = await db.row(
                "SELECT now() AS now, (SELECT min(xact_start) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
                " AND xact_start > now() - interval '1 hour') AS oldest"
            )
            assert row is not None
            cutoff = as_utc(row["now"]) - delay
            return min(cutoff, as_utc(row["oldest"])) if row["oldest"] else cutoff
        return datetime.now(UTC) - delay

    return await single_statement(work)


async def close_ended_periods(
    cutoff: datetime | None = None, delay: timedelta = DEFAULT_CLOSE_DELAY
) -> int:
    """Closes, in order, every period of every application that ended at or before `cutoff`
    (default: `close_cutoff(delay)`); the number of records this call wrote."""
    cutoff = cutoff or await close_cutoff(delay)
    last_ended = previous_month(month_start(cutoff))

    async def due(db: Sql) -> list[dict[str, Any]]:
        # Periods are closed oldest first, so an application whose last ended period has a
        # record has nothing left to close.
        return await db.rows(
            "SELECT a.id, a.created_at FROM application a"
            " WHERE a.created_at < $1 AND NOT EXISTS (SELECT 1 FROM billing_period b"
            " WHERE b.application_id = a.id AND b.period_start = $2) ORDER BY a.id",
            next_month(last_ended),
            last_ended,
        )

    written = 0
    for app in await single_statement(due):
        first = month_start(as_utc(app["created_at"]))
        closed = await single_statement(
            lambda db, app_id=app["id"]: db.rows(
                "SELECT period_start FROM billing_period WHERE application_id = $1", app_id
            )
        )
        done = {as_utc(row["period_start"]) for row in closed}
        start = first
        while start <= last_ended:
            if start not in done:
                written += await close_period(app["id"], start)
            start = next_month(start)
    return written
