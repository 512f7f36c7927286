"""Rollups of the ledger for reporting, folded in the background so that a report reads a few
thousand rows instead of a million, and still answers exactly.

Two tables, both fed by `fold_usage` from the ledger entries created before a watermark:

- `usage_rollup`: per pool, UTC hour of `occurred_at` and feature, the credits used
  (CONSUME), expired (EXPIRE) and purchased (PURCHASE).
- `end_user_window_usage`: per End User and pool, the credits used since `window_start`
  (the start of the UTC hour 7 days before the fold), for burn rates.

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
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the watermark before the first fold


class UsageRollup(Model):
    """Ledger sums per pool, UTC hour (of `occurred_at`) and feature ('' for EXPIRE and
    PURCHASE), over the entries created before the fold watermark."""

    id = fields.BigIntField(primary_key=True)
    pool_id = fields.BigIntField()  # no foreign key: written by the fold only
    hour = fields.DatetimeField()
    feature = fields.CharField(max_length=100)
    used = fields.BigIntField(default=0)
    expired = fields.BigIntField(default=0)
    purchased = fields.BigIntField(default=0)

    class Meta:
        table = "usage_rollup"
        unique_together = (("pool_id", "hour", "feature"),)


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


class RollupState(Model):
    """One row (id 1): what the rollups hold. Entries created before `watermark` are folded;
    `window_start` is the start of the window `end_user_window_usage` sums."""

    id = fields.IntField(primary_key=True)
    watermark = fields.DatetimeField()
    window_start = fields.DatetimeField()

    class Meta:
        table = "rollup_state"


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def window_start(now: datetime) -> datetime:
    """Burn rates look at the entries that occurred since the start of the UTC hour 7 days
    ago, so the window moves once an hour and a fold can keep its sums."""
    return floor_hour(now) - WINDOW


def hour_sql(db: Sql, column: str) -> str:
    """The UTC hour a timestamp column falls in, as a value of the column's own type."""
    if db.postgres:
        return f"date_trunc('hour', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    return f"strftime('%Y-%m-%d %H:00:00+00:00', {column})"


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


async def _fold(db: Sql) -> bool:
    state = await db.row("SELECT watermark, window_start FROM rollup_state WHERE id = 1 FOR UPDATE")
    assert state is not None, "migration 0008 creates the rollup state row"
    if db.postgres:
        new_mark = await db.value(_PG_WATERMARK)
    else:  # one writer at a time: everything written before now has committed
        new_mark = await db.value("SELECT now() AS watermark")
    if not _later(new_mark, state["watermark"]):
        return False
    old_mark = state["watermark"]
    await db.run(
        "INSERT INTO usage_rollup (pool_id, hour, feature, used, expired, purchased)"
        f" SELECT l.pool_id, {hour_sql(db, 'l.occurred_at')},"
        " CASE WHEN l.kind = 'CONSUME' THEN COALESCE(l.feature, '') ELSE '' END,"
        " SUM(CASE WHEN l.kind = 'CONSUME' THEN -l.amount ELSE 0 END),"
        " SUM(CASE WHEN l.kind = 'EXPIRE' THEN -l.amount ELSE 0 END),"
        " SUM(CASE WHEN l.kind = 'PURCHASE' THEN l.amount ELSE 0 END)"
        # through the (pool_id, created_at) index, one range per pool
        " FROM credit_pool p JOIN ledger_entry l ON l.pool_id = p.id"
        " AND l.created_at >= $1 AND l.created_at < $2"
        f" WHERE l.kind IN {_KINDS} GROUP BY 1, 2, 3"
        " ON CONFLICT (pool_id, hour, feature) DO UPDATE SET"
        " used = usage_rollup.used + excluded.used,"
        " expired = usage_rollup.expired + excluded.expired,"
        " purchased = usage_rollup.purchased + excluded.purchased",
        old_mark,
        new_mark,
    )
    start = window_start(datetime.now(UTC))
    if _same_moment(state["window_start"], start):
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
    await db.run(
        "UPDATE rollup_state SET watermark = $1, window_start = $2 WHERE id = 1",
        new_mark,
        start,
    )
    return True


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
FOLDED_WINDOW_START = "(SELECT window_start FROM rollup_state WHERE id = 1)"


# Credits used since the window start, for a row joined with `window_used_joins`.
WINDOW_USED = "(COALESCE(wu.used, 0) + COALESCE(wd.used, 0))"


def window_used_joins(end_user: str, pool: str, scope_ledger: str, ws: str) -> str:
    """LEFT JOINs giving `WINDOW_USED` for the row whose End User and pool ids are the
    expressions `end_user` and `pool`: the credits it used since the window start `ws` (a
    parameter), exactly. That is the folded sum (wu), plus (wd) the entries between the
    folded window start and `ws` (only when the window moved since the last fold, within the
    hour after it moves: the guard is evaluated once and the part skipped otherwise) and the
    tail. `scope_ledger` restricts ledger_entry (alias l) on indexed columns."""
    folded = FOLDED_WINDOW_START
    low = f"CASE WHEN {folded} < {ws} THEN {folded} ELSE {ws} END"
    high = f"CASE WHEN {folded} < {ws} THEN {ws} ELSE {folded} END"
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
        f" AND l.created_at >= {WATERMARK} AND l.kind = 'CONSUME'"
        ") AS x GROUP BY end_user_id, pool_id)"
    )
    return (
        f" LEFT JOIN end_user_window_usage wu ON wu.end_user_id = {end_user}"
        f" AND wu.pool_id = {pool}"
        f" LEFT JOIN {delta} wd ON wd.end_user_id = {end_user} AND wd.pool_id = {pool}"
    )
