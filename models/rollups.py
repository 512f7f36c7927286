"""Rollups of the ledger for reporting, folded in the background so that a report reads a few
thousand rows instead of a million, and still answers exactly.

Two tables, both fed by `fold_usage` from the ledger entries created before a watermark:

- `usage_rollup`: per pool, UTC hour of `occurred_at` and feature, the credits used
  (CONSUME), expired (EXPIRE) and purchased (PURCHASE); and, on the rows of feature '', the
  net change of the pool's remaining (`booked`) by the UTC hour of `created_at`, when the
  ledger booked it (a series' `remaining` is the balance as the ledger stood).
- `usage_rollup_day`: the same per UTC day, for DAY, WEEK and MONTH series.
- `end_user_window_usage`: per End User and pool, the credits used since `window_start`
  (the start of the UTC hour 7 days before the fold), for burn rates.
- `balance_report` and `pool_report`: each End User balance as the fold saw it, with its
  window use, and per pool the sums the allocation summary needs (`models.balance_report`
  states how readers stay exact with them).
- `billing_rollup_day` and `billing_active_month`: per lot and UTC day of `created_at`, the
  sums a billing period reads, and the End Users that consumed in each pool and UTC month of
  `created_at` (`models.billing`).
- `end_user_count`: End Users per application as deltas that triggers on `end_user` write
  in the creating statement (migration 0010); the fold merges each application's deltas.

A report reads the rollup plus the *tail*: the ledger entries created at or after the
watermark, found through the ledger's (pool_id, created_at) index. Both are read in one
statement (one snapshot), and the watermark moves in the same transaction as the rows it
folded, so an entry is always counted exactly once. The watermark never passes the start of
a transaction still open (`pg_stat_activity`): `created_at` is the writing transaction's
start (`now()`), so an entry created before the watermark can no longer be committed after
the fold. Nothing here touches the consume path: the ledger keeps its indexes and writes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise import fields
from tortoise.models import Model

from models.sql import Sql, transaction

WINDOW = timedelta(days=7)  # burn rates: mean daily use over the last 7 days
HORIZON_DAYS = 7  # the allocation summary projects use this far ahead
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the watermark before the first fold
_EPOCH_TEXT = "1970-01-01 00:00:00+00:00"  # as SQLite holds it


class _UsageSums(Model):
    """Ledger sums per pool, period (of `occurred_at`) and feature ('' for EXPIRE and
    PURCHASE), over the entries created before the fold watermark; `booked` (feature '')
    is by period of `created_at`: Σ amount of PURCHASE, CONSUME and EXPIRE, the change of
    the pool's remaining the ledger booked in the period."""

    id = fields.BigIntField(primary_key=True)
    pool_id = fields.BigIntField()  # no foreign key: written by the fold only
    feature = fields.CharField(max_length=100)
    used = fields.BigIntField(default=0)
    expired = fields.BigIntField(default=0)
    purchased = fields.BigIntField(default=0)
    booked = fields.BigIntField(default=0, db_default=0)

    class Meta:
        abstract = True


class UsageRollup(_UsageSums):
    """The sums per UTC hour."""

    hour = fields.DatetimeField()

    class Meta:
        table = "usage_rollup"
        unique_together = (("pool_id", "hour", "feature"),)


class UsageRollupDay(_UsageSums):
    """The sums per UTC day: series of DAY, WEEK and MONTH buckets (whole days) read these,
    a 24th of the hourly rows."""

    day = fields.DatetimeField()

    class Meta:
        table = "usage_rollup_day"
        unique_together = (("pool_id", "day", "feature"),)


class BillingRollupDay(Model):
    """Per lot and UTC day of `created_at` (when the ledger booked it), over the entries
    created before the fold watermark: the change of the lot's remaining (PURCHASE, CONSUME
    and EXPIRE), what was purchased, used, expired and allocated (net of releases), and the
    number of purchases. A billing period reads these and the tail (`models.billing`)."""

    id = fields.BigIntField(primary_key=True)
    pool_id = fields.BigIntField()  # no foreign key: written by the fold only
    lot_id = fields.BigIntField()
    day = fields.DatetimeField()
    changed = fields.BigIntField(default=0)
    purchased = fields.BigIntField(default=0)
    used = fields.BigIntField(default=0)
    expired = fields.BigIntField(default=0)
    allocated = fields.BigIntField(default=0)
    purchases = fields.BigIntField(default=0)

    class Meta:
        table = "billing_rollup_day"
        unique_together = (("pool_id", "lot_id", "day"),)
        indexes = (("pool_id", "day"),)


class BillingActiveMonth(Model):
    """An End User that consumed in a pool in a UTC month of `created_at`, over the entries
    created before the fold watermark."""

    id = fields.BigIntField(primary_key=True)
    pool_id = fields.BigIntField()
    month = fields.DatetimeField()
    end_user_id = fields.BigIntField()

    class Meta:
        table = "billing_active_month"
        unique_together = (("pool_id", "month", "end_user_id"),)


class EndUserWindowUsage(Model):
    """Credits each End User used in a pool since the fold's window start, over the entries
    created before the fold watermark (rows only where they used some)."""

    id = fields.BigIntField(primary_key=True)
    end_user_id = fields.BigIntField()
    pool_id = fields.BigIntField()
    used = fields.BigIntField(default=0)

    class Meta:
        table = "end_user_window_usage"
        unique_together = (("end_user_id", "pool_id"),)
        indexes = (("pool_id",),)


class BalanceReport(Model):
    """Each End User balance as the fold last saw it (`models.balance_report`), with its use
    over the folded burn window, how its 7-day shortfall behaves and its exhaustion key."""

    id = fields.BigIntField(primary_key=True)
    end_user_id = fields.BigIntField()
    pool_id = fields.BigIntField()
    allocated = fields.BigIntField()
    used = fields.BigIntField()
    remaining = fields.BigIntField()
    status = fields.CharField(max_length=16)
    window_used = fields.BigIntField()
    shortfall_class = fields.SmallIntField()
    exhaustion = fields.FloatField(null=True)  # remaining / window_used when both > 0

    class Meta:
        table = "balance_report"
        unique_together = (("end_user_id", "pool_id"),)


class PoolReport(Model):
    """Per pool, sums over its `balance_report` rows."""

    pool_id = fields.BigIntField(primary_key=True, generated=False)
    with_allocation = fields.BigIntField()
    with_credits = fields.BigIntField()
    low = fields.BigIntField()
    exhausted = fields.BigIntField()
    window_used = fields.BigIntField()
    short_window_used = fields.BigIntField()  # over the balances always short (class 1)
    short_remaining = fields.BigIntField()

    class Meta:
        table = "pool_report"


class ReportTouch(Model):
    """A threshold change (which moves a status without a ledger entry) since the last
    fold: one End User's balance in a pool, or (no End User) the pool's default."""

    id = fields.BigIntField(primary_key=True)
    pool_id = fields.BigIntField()
    end_user_id = fields.BigIntField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "report_touch"
        indexes = (("pool_id", "created_at"),)


class EndUserCount(Model):
    """A change of an application's number of End Users: triggers on `end_user` add one row
    per statement (PostgreSQL) or per End User (SQLite), in the writing transaction, so the
    count is exact in any snapshot; inserts never wait on each other, unlike one counter
    row, and the fold merges them. The count is the sum (`END_USER_TOTAL`)."""

    id = fields.BigIntField(primary_key=True)
    application_id = fields.BigIntField()
    delta = fields.BigIntField()

    class Meta:
        table = "end_user_count"
        indexes = (("application_id",),)


# An application's number of End Users ($n its id), without counting them one by one.
END_USER_TOTAL = "(SELECT COALESCE(SUM(delta), 0) FROM end_user_count WHERE application_id = {})"


class RollupState(Model):
    """One row (id 1): what the rollups hold. Entries created before `watermark` are folded;
    `window_start` is the start of the window `end_user_window_usage` sums."""

    id = fields.IntField(primary_key=True)
    watermark = fields.DatetimeField()
    window_start = fields.DatetimeField()
    # Entries created before it are in the billing rollups. A mark of its own: a process of
    # a version without them may still fold (during a rolling upgrade) and move `watermark`
    # past entries it never added to them; billing's tail starts here and misses none.
    # (Null only until migration 0020 sets it.)
    billing_watermark = fields.DatetimeField(null=True)

    class Meta:
        table = "rollup_state"


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def window_start(now: datetime) -> datetime:
    """Burn rates look at the entries that occurred since the start of the UTC hour 7 days
    ago, so the window moves once an hour and a fold can keep its sums."""
    return floor_hour(now) - WINDOW


_SQLITE_TRUNCATED = {
    "hour": "%Y-%m-%d %H:00:00+00:00",
    "day": "%Y-%m-%d 00:00:00+00:00",
    "month": "%Y-%m-01 00:00:00+00:00",
}


def truncated_sql(db: Sql, period: str, column: str) -> str:
    """The UTC hour, day or month a timestamp column falls in, as a value of the column's
    type."""
    if db.postgres:
        return f"date_trunc('{period}', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    return f"strftime('{_SQLITE_TRUNCATED[period]}', {column})"


# The watermark a fold may move to: now, or the start of the oldest other open transaction.
_PG_WATERMARK = (
    "SELECT LEAST(now(), COALESCE((SELECT min(xact_start) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND xact_start IS NOT NULL), now())) AS watermark"
)
_KINDS = "('CONSUME', 'EXPIRE', 'PURCHASE')"


async def fold_usage() -> bool:
    """Folds the ledger entries created since the last fold into the rollups; False when
    there was nothing to move. Safe in every process at once: the state row is locked, and
    a fold that finds the watermark where it would put it does nothing. Keeps the rule that
    every ledger entry is either in the rollups (created before the watermark) or in the
    tail a report reads (created at or after it), never both."""
    return await transaction(_fold)


_DERIVED = (
    "usage_rollup",
    "usage_rollup_day",
    "billing_rollup_day",
    "billing_active_month",
    "end_user_window_usage",
    "balance_report",
    "pool_report",
)


async def rebuild_rollups() -> None:
    """Every rollup summed afresh from the whole ledger, in one transaction: for history
    booked in the past (`models.clock.booked_at`) once a fold has passed its time, whose
    entries would otherwise be neither folded nor in the tail."""

    async def work(db: Sql) -> None:
        await db.run("SELECT watermark FROM rollup_state WHERE id = 1 FOR UPDATE")
        for table in _DERIVED:
            await db.run(f"DELETE FROM {table}")
        await db.run(
            "UPDATE rollup_state SET watermark = $1, window_start = $1, billing_watermark = $1"
            " WHERE id = 1",
            EPOCH if db.postgres else _EPOCH_TEXT,
        )
        await _fold(db)

    await transaction(work)


async def _fold(db: Sql) -> bool:
    state = await db.row(
        "SELECT watermark, window_start, billing_watermark FROM rollup_state WHERE id = 1"
        " FOR UPDATE"
    )
    assert state is not None, "migration 0008 creates the rollup state row"
    if db.postgres:
        new_mark = await db.value(_PG_WATERMARK)
    else:  # one writer at a time: everything written before now has committed
        new_mark = await db.value("SELECT now() AS watermark")
    if not _later(new_mark, state["watermark"]):
        return False
    old_mark = state["watermark"]
    for table, period in (("usage_rollup", "hour"), ("usage_rollup_day", "day")):
        await db.run(
            f"INSERT INTO {table} (pool_id, {period}, feature, used, expired, purchased)"
            f" SELECT l.pool_id, {truncated_sql(db, period, 'l.occurred_at')},"
            " CASE WHEN l.kind = 'CONSUME' THEN COALESCE(l.feature, '') ELSE '' END,"
            " SUM(CASE WHEN l.kind = 'CONSUME' THEN -l.amount ELSE 0 END),"
            " SUM(CASE WHEN l.kind = 'EXPIRE' THEN -l.amount ELSE 0 END),"
            " SUM(CASE WHEN l.kind = 'PURCHASE' THEN l.amount ELSE 0 END)"
            # through the (pool_id, created_at) index, one range per pool
            " FROM credit_pool p JOIN ledger_entry l ON l.pool_id = p.id"
            " AND l.created_at >= $1 AND l.created_at < $2"
            f" WHERE l.kind IN {_KINDS} GROUP BY 1, 2, 3"
            f" ON CONFLICT (pool_id, {period}, feature) DO UPDATE SET"
            f" used = {table}.used + excluded.used,"
            f" expired = {table}.expired + excluded.expired,"
            f" purchased = {table}.purchased + excluded.purchased",
            old_mark,
            new_mark,
        )
        await db.run(
            f"INSERT INTO {table} (pool_id, {period}, feature, used, expired, purchased, booked)"
            f" SELECT l.pool_id, {truncated_sql(db, period, 'l.created_at')}, '', 0, 0, 0,"
            " SUM(l.amount) FROM credit_pool p JOIN ledger_entry l ON l.pool_id = p.id"
            " AND l.created_at >= $1 AND l.created_at < $2"
            f" WHERE l.kind IN {_KINDS} GROUP BY 1, 2"
            f" ON CONFLICT (pool_id, {period}, feature) DO UPDATE SET"
            f" booked = {table}.booked + excluded.booked",
            old_mark,
            new_mark,
        )
    await fold_billing(db, state["billing_watermark"], new_mark)
    start = window_start(datetime.now(UTC))
    window_kept = _same_moment(state["window_start"], start)
    if window_kept:
        await db.run(
            "INSERT INTO end_user_window_usage (end_user_id, pool_id, used)"
            " SELECT l.end_user_id, l.pool_id, -SUM(l.amount)"
            " FROM credit_pool p JOIN ledger_entry l ON l.pool_id = p.id"
            " AND l.created_at >= $1 AND l.created_at < $2"
            " WHERE l.kind = 'CONSUME' AND l.occurred_at >= $3 GROUP BY 1, 2"
            " ON CONFLICT (end_user_id, pool_id) DO UPDATE SET"
            " used = end_user_window_usage.used + excluded.used",
            old_mark,
            new_mark,
            start,
        )
    else:  # the window moved on (hourly): sum it afresh
        await db.run("DELETE FROM end_user_window_usage")
        await db.run(
            "INSERT INTO end_user_window_usage (end_user_id, pool_id, used)"
            " SELECT l.end_user_id, l.pool_id, -SUM(l.amount)"
            # through the (application_id, occurred_at) index, one range per application
            " FROM application a JOIN ledger_entry l ON l.application_id = a.id"
            " AND l.occurred_at >= $2"
            " WHERE l.kind = 'CONSUME' AND l.created_at < $1 GROUP BY 1, 2",
            new_mark,
            start,
        )
    await refresh_balance_report(db, old_mark, new_mark, everything=not window_kept)
    await merge_end_user_counts(db)
    await db.run(
        "UPDATE rollup_state SET watermark = $1, window_start = $2 WHERE id = 1",
        new_mark,
        start,
    )
    return True


async def fold_billing(db: Sql, old_mark: Any, new_mark: Any) -> None:
    """Adds the entries created in [old_mark, new_mark) to the billing rollups and moves
    their watermark to `new_mark` (`old_mark`, the billing watermark, may lie behind the
    fold's own: see `RollupState`)."""
    # through the (pool_id, created_at) index, one range per pool
    entries = (
        " FROM credit_pool p JOIN ledger_entry l ON l.pool_id = p.id"
        " AND l.created_at >= $1 AND l.created_at < $2"
    )
    await db.run(
        "INSERT INTO billing_rollup_day (pool_id, lot_id, day, changed, purchased, used,"
        f" expired, allocated, purchases) SELECT l.pool_id, l.lot_id,"
        f" {truncated_sql(db, 'day', 'l.created_at')},"
        f" SUM(CASE WHEN l.kind IN {_KINDS} THEN l.amount ELSE 0 END),"
        " SUM(CASE WHEN l.kind = 'PURCHASE' THEN l.amount ELSE 0 END),"
        " -SUM(CASE WHEN l.kind = 'CONSUME' THEN l.amount ELSE 0 END),"
        " -SUM(CASE WHEN l.kind = 'EXPIRE' THEN l.amount ELSE 0 END),"
        " SUM(CASE WHEN l.kind IN ('ALLOCATE', 'RELEASE') THEN l.amount ELSE 0 END),"
        " SUM(CASE WHEN l.kind = 'PURCHASE' THEN 1 ELSE 0 END)"
        f"{entries} WHERE l.lot_id IS NOT NULL GROUP BY 1, 2, 3"
        " ON CONFLICT (pool_id, lot_id, day) DO UPDATE SET"
        " changed = billing_rollup_day.changed + excluded.changed,"
        " purchased = billing_rollup_day.purchased + excluded.purchased,"
        " used = billing_rollup_day.used + excluded.used,"
        " expired = billing_rollup_day.expired + excluded.expired,"
        " allocated = billing_rollup_day.allocated + excluded.allocated,"
        " purchases = billing_rollup_day.purchases + excluded.purchases",
        old_mark,
        new_mark,
    )
    await db.run(
        "INSERT INTO billing_active_month (pool_id, month, end_user_id)"
        f" SELECT DISTINCT l.pool_id, {truncated_sql(db, 'month', 'l.created_at')},"
        f" l.end_user_id{entries} WHERE l.kind = 'CONSUME' AND l.end_user_id IS NOT NULL"
        " ON CONFLICT (pool_id, month, end_user_id) DO NOTHING",
        old_mark,
        new_mark,
    )
    await db.run("UPDATE rollup_state SET billing_watermark = $1 WHERE id = 1", new_mark)


# A balance's 7-day shortfall is max(0, h * window_used - remaining), h = HORIZON / the
# window's length, which is WINDOW plus the part of the current hour gone by: h moves
# within (H / (W + 1 hour), H / W]. Class 1: short at every h (linear in h); class 0:
# never short; class 2: it depends on h (readers recompute those live).
_HORIZON_HOURS = HORIZON_DAYS * 24
_WINDOW_HOURS = int(WINDOW / timedelta(hours=1))
_SHORTFALL_CLASS = (
    f"CASE WHEN {_HORIZON_HOURS} * COALESCE(wu.used, 0) >= {_WINDOW_HOURS + 1} * b.remaining"
    f" THEN 1 WHEN {_HORIZON_HOURS} * COALESCE(wu.used, 0) <= {_WINDOW_HOURS} * b.remaining"
    " THEN 0 ELSE 2 END"
)
# Same expression as the readers' live ranking (bit for bit the same double).
EXHAUSTION_KEY = "CAST({remaining} AS DOUBLE PRECISION) / {window_used}"
_REPORT_COLUMNS = (
    "end_user_id, pool_id, allocated, used, remaining, status, window_used, shortfall_class,"
    " exhaustion"
)
_REPORT_VALUES = (
    "b.end_user_id, b.pool_id, b.allocated, b.used, b.remaining, b.status,"
    f" COALESCE(wu.used, 0), {_SHORTFALL_CLASS}, CASE WHEN b.remaining > 0 AND wu.used > 0"
    f" THEN {EXHAUSTION_KEY.format(remaining='b.remaining', window_used='wu.used')} END"
)
# Balances the entries created in [$1, $2) changed, and those a threshold change touched.
_CHANGED_BALANCES = (
    "(SELECT l.end_user_id, l.pool_id FROM credit_pool p JOIN ledger_entry l"
    " ON l.pool_id = p.id AND l.created_at >= $1 AND l.created_at < $2"
    " WHERE l.end_user_id IS NOT NULL"
    " UNION SELECT t.end_user_id, t.pool_id FROM report_touch t"
    " WHERE t.created_at < $2 AND t.end_user_id IS NOT NULL"
    " UNION SELECT b.end_user_id, b.pool_id FROM report_touch t"
    " JOIN end_user_balance b ON b.pool_id = t.pool_id"
    " WHERE t.created_at < $2 AND t.end_user_id IS NULL)"
)
_POOL_SUMS = (
    "SELECT pool_id, SUM(CASE WHEN allocated > 0 THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN remaining > 0 THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN status = 'LOW' THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN allocated > 0 AND remaining = 0 THEN 1 ELSE 0 END), SUM(window_used),"
    " SUM(CASE WHEN shortfall_class = 1 THEN window_used ELSE 0 END),"
    " SUM(CASE WHEN shortfall_class = 1 THEN remaining ELSE 0 END) FROM balance_report"
)
_POOL_COLUMNS = (
    "pool_id, with_allocation, with_credits, low, exhausted, window_used, short_window_used,"
    " short_remaining"
)


async def refresh_balance_report(db: Sql, old_mark: Any, new_mark: Any, everything: bool) -> None:
    """Brings `balance_report` up to the balances as they are now, for every balance a
    ledger entry created in [old_mark, new_mark) or a threshold change marked before
    new_mark touched (`everything`: all of them, when the burn window moved), then the
    sums of the pools concerned. Runs in the fold's transaction, after the window use."""
    window = (
        " FROM end_user_balance b LEFT JOIN end_user_window_usage wu"
        " ON wu.end_user_id = b.end_user_id AND wu.pool_id = b.pool_id"
    )
    if everything:
        await db.run("DELETE FROM balance_report")
        await db.run(
            f"INSERT INTO balance_report ({_REPORT_COLUMNS}) SELECT {_REPORT_VALUES}{window}"
        )
        await db.run("DELETE FROM pool_report")
        await db.run(f"INSERT INTO pool_report ({_POOL_COLUMNS}) {_POOL_SUMS} GROUP BY pool_id")
    else:
        updates = ", ".join(f"{name} = excluded.{name}" for name in _REPORT_COLUMNS.split(", ")[2:])
        await db.run(
            f"INSERT INTO balance_report ({_REPORT_COLUMNS}) SELECT {_REPORT_VALUES}{window}"
            f" JOIN {_CHANGED_BALANCES} c ON c.end_user_id = b.end_user_id"
            " AND c.pool_id = b.pool_id WHERE 1 = 1"  # (SQLite: no ON CONFLICT after a JOIN)
            f" ON CONFLICT (end_user_id, pool_id) DO UPDATE SET {updates}",
            old_mark,
            new_mark,
        )
        pool_updates = ", ".join(
            f"{name} = excluded.{name}" for name in _POOL_COLUMNS.split(", ")[1:]
        )
        await db.run(
            f"INSERT INTO pool_report ({_POOL_COLUMNS}) {_POOL_SUMS}"
            f" WHERE pool_id IN (SELECT pool_id FROM {_CHANGED_BALANCES} c) GROUP BY pool_id"
            f" ON CONFLICT (pool_id) DO UPDATE SET {pool_updates}",
            old_mark,
            new_mark,
        )
    await db.run("DELETE FROM report_touch WHERE created_at < $1", new_mark)


async def merge_end_user_counts(db: Sql) -> None:
    """One `end_user_count` row per application again. PostgreSQL: the rows deleted and
    their sums written back in one statement (one snapshot), so a delta committed meanwhile
    is neither lost nor counted twice; SQLite has one writer at a time."""
    several = (
        "application_id IN (SELECT application_id FROM end_user_count"
        " GROUP BY application_id HAVING COUNT(*) > 1)"
    )
    if db.postgres:
        await db.run(
            f"WITH gone AS (DELETE FROM end_user_count WHERE {several}"
            " RETURNING application_id, delta)"
            " INSERT INTO end_user_count (application_id, delta)"
            " SELECT application_id, SUM(delta) FROM gone GROUP BY application_id"
        )
        return
    last = await db.value("SELECT MAX(id) AS id FROM end_user_count")
    if last is None:
        return
    await db.run(
        "INSERT INTO end_user_count (application_id, delta) SELECT application_id, SUM(delta)"
        f" FROM end_user_count WHERE id <= $1 AND {several} GROUP BY application_id",
        last,
    )
    await db.run(f"DELETE FROM end_user_count WHERE id <= $1 AND {several}", last)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _later(candidate: Any, current: Any) -> bool:
    return _as_datetime(candidate) > _as_datetime(current)


def _same_moment(stored: Any, moment: datetime) -> bool:
    return _as_datetime(stored) == moment


# ------------------------------------------------------------------------- for the readers

# The state as scalar subqueries: PostgreSQL runs each once per statement (an InitPlan, in
# the statement's snapshot), uses the watermark as an index bound, and skips a part whose
# guard is false without scanning anything.
WATERMARK = "(SELECT watermark FROM rollup_state WHERE id = 1)"


BILLING_WATERMARK = "(SELECT billing_watermark FROM rollup_state WHERE id = 1)"


def in_tail(alias: str, watermark: str = WATERMARK) -> str:
    """The entries of ledger_entry `alias` a report reads live: created at or after the
    watermark (`BILLING_WATERMARK` for the billing rollups). The bound 'infinity' excludes
    nothing (SQLite compares the text: digits sort before 'i'); it makes PostgreSQL estimate
    a range of unknown bounds (0.5% of the rows) instead of a third of the ledger, so the
    hash tables and plans built for the tail fit its real size."""
    return f"{alias}.created_at >= {watermark} AND {alias}.created_at < 'infinity'"


FOLDED_WINDOW_START = "(SELECT window_start FROM rollup_state WHERE id = 1)"


# Credits used since the window start, for a row joined with `window_used_joins`.
WINDOW_USED = "(COALESCE(wu.used, 0) + COALESCE(wd.used, 0))"


def moved_window(ws: str, folded: str = FOLDED_WINDOW_START) -> tuple[str, str]:
    """The bounds of `occurred_at` between the folded window start `folded` and `ws` (empty
    when they are the same moment): the use the folded window sums differs by these
    entries."""
    low = f"CASE WHEN {folded} < {ws} THEN {folded} ELSE {ws} END"
    high = f"CASE WHEN {folded} < {ws} THEN {ws} ELSE {folded} END"
    return low, high


def moved_window_entries(ws: str, condition: str) -> str:
    """FROM and WHERE of the CONSUME entries (ledger_entry l) meeting `condition` that
    occurred between the folded window start and `ws` and were folded (created before the
    watermark): none unless the window moved since the last fold. The state is joined once
    (rollup_state s) rather than read by a scalar subquery at each use: PostgreSQL starts
    every such subquery on each execution, and a report statement repeats these parts."""
    low, high = moved_window(ws, "s.window_start")
    return (
        "rollup_state s JOIN ledger_entry l ON l.created_at < s.watermark"
        f" AND l.occurred_at >= {low} AND l.occurred_at < {high}"
        f" WHERE s.id = 1 AND s.window_start <> {ws} AND {condition} AND l.kind = 'CONSUME'"
    )


def window_used_of(end_user: str, pool: str, ws: str, pools_with_tail: str | None = None) -> str:
    """The credits End User `end_user` used in pool `pool` since the window start `ws` (SQL
    expressions; `ws` a parameter), exactly, as scalar subqueries of the row: the folded
    sum, the use between the folded window start and `ws` (only when the window moved
    since the last fold: skipped by a guard otherwise) and the tail. Each is an index
    lookup per row, for statements about a few balances (`window_used_joins` suits a whole
    pool's). `pools_with_tail`, an array of the pools with entries in the tail
    (`tail_pools`), spares the tail's lookup in the others."""
    mine = f"l.end_user_id = {end_user} AND l.pool_id = {pool}"
    tail = (
        f"COALESCE((SELECT CAST(SUM(CASE WHEN l.occurred_at >= {ws} THEN -l.amount ELSE 0 END)"
        f" AS BIGINT) FROM ledger_entry l WHERE {mine} AND l.kind = 'CONSUME'"
        f" AND {in_tail('l')}), 0)"
    )
    if pools_with_tail is not None:
        tail = f"CASE WHEN {pool} = ANY({pools_with_tail}) THEN {tail} ELSE 0 END"
    return (
        "(COALESCE((SELECT wu.used FROM end_user_window_usage wu"
        f" WHERE wu.end_user_id = {end_user} AND wu.pool_id = {pool}), 0)"
        f" + CASE WHEN {FOLDED_WINDOW_START} = {ws} THEN 0 ELSE"
        " COALESCE((SELECT CAST(SUM(CASE WHEN l.occurred_at >= s.window_start THEN l.amount"
        f" ELSE -l.amount END) AS BIGINT) FROM {moved_window_entries(ws, mine)}), 0) END"
        f" + {tail})"
    )


def tail_pools(application: str) -> str:
    """PostgreSQL: the ids of application `application`'s pools (an SQL expression, not of
    the row: evaluated once per statement) with entries in the tail, as an array: one index
    probe per pool, where a page of End Users would probe the tail once per balance. Between
    folds of a quiet pool, that tail is empty. (Any entry counts, not only consumption: a
    pool whose tail holds a bulk allocation would otherwise be scanned through it.)"""
    return (
        f"ARRAY(SELECT t.id FROM credit_pool t WHERE t.application_id = {application}"
        f" AND EXISTS (SELECT 1 FROM ledger_entry l WHERE l.pool_id = t.id AND {in_tail('l')}))"
    )


def window_used_joins(end_user: str, pool: str, scope_ledger: str, ws: str) -> str:
    """LEFT JOINs giving `WINDOW_USED` for the row whose End User and pool ids are the
    expressions `end_user` and `pool`: the credits it used since the window start `ws` (a
    parameter), exactly. That is the folded sum (wu), plus (wd) the entries between the
    folded window start and `ws` (only when the window moved since the last fold, within the
    hour after it moves: the guard is evaluated once and the part skipped otherwise) and the
    tail. `scope_ledger` restricts ledger_entry (alias l) on indexed columns."""
    folded = FOLDED_WINDOW_START
    low, high = moved_window(ws)
    # (the state read by scalar subqueries here, not joined: a join makes PostgreSQL
    # expect many more moved entries and plan the whole pool's join for them)
    delta = (
        "(SELECT end_user_id, pool_id, SUM(used) AS used FROM ("
        " SELECT l.end_user_id, l.pool_id,"
        f" CASE WHEN l.occurred_at >= {folded} THEN l.amount ELSE -l.amount END AS used"
        f" FROM ledger_entry l WHERE {folded} <> {ws} AND {scope_ledger}"
        f" AND l.kind = 'CONSUME' AND l.created_at < {WATERMARK}"
        f" AND l.occurred_at >= {low} AND l.occurred_at < {high}"
        " UNION ALL"
        # the tail through the (pool_id, created_at) index: no condition on occurred_at,
        # which would lure the planner to (application_id, occurred_at) and a week of rows
        f" SELECT l.end_user_id, l.pool_id, CASE WHEN l.occurred_at >= {ws} THEN -l.amount"
        f" ELSE 0 END FROM ledger_entry l WHERE {scope_ledger}"
        f" AND {in_tail('l')} AND l.kind = 'CONSUME'"
        ") AS x GROUP BY end_user_id, pool_id)"
    )
    return (
        f" LEFT JOIN end_user_window_usage wu ON wu.end_user_id = {end_user}"
        f" AND wu.pool_id = {pool}"
        f" LEFT JOIN {delta} wd ON wd.end_user_id = {end_user} AND wd.pool_id = {pool}"
    )
