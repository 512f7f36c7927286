"""How the reports read the balance report (`balance_report` and `pool_report`, written by
the fold in `models.rollups`) and still answer exactly.

Rule: a balance's report row equals the balance as it is now (counters, status, use over
the burn window) unless, since the fold's watermark, a ledger entry of that End User and
pool was created (every counter change writes one in its transaction), a threshold change
marked the balance or its pool (`touch_balance_report`: a status moves without an entry),
or the burn window moved past some of its folded use. `changed_end_users` finds those End
Users; a report takes them live and the report rows for all others, in one statement (one
snapshot). With nothing changed, the allocation summary reads one row per pool and a
ranking a `first`-long index range, whatever the number of End Users; the more End Users
changed since the last fold, the closer a report gets to reading them all live.
"""

from __future__ import annotations

from models.rollups import FOLDED_WINDOW_START, WATERMARK, in_tail, moved_window
from models.sql import Sql

CHANGED = "x"  # the name of the CTE a report gives `changed_end_users`


async def touch_balance_report(db: Sql, pool_id: int, end_user_id: int | None) -> None:
    """Marks a threshold change in the writing transaction: one End User's balance, or
    (None) every balance following the pool's default. Readers take the marked balances
    live until the fold has seen the change."""
    await db.run(
        "INSERT INTO report_touch (pool_id, end_user_id, created_at) VALUES ($1, $2, now())",
        pool_id,
        end_user_id,
    )


def changed_end_users(
    app: str, pool: str, ws: str, *, postgres: bool, borderline: bool = False
) -> str:
    """A SELECT of the End Users (`end_user_id`) whose balance in the pool may differ from
    its report row, `app`, `pool` and `ws` (the burn window start) being SQL expressions;
    with `borderline`, also those whose shortfall depends on the time (class 2); for
    PostgreSQL with `postgres`."""
    low, high = moved_window(ws)
    since = f"created_at >= {WATERMARK}"
    parts = [
        # the tail, through the ledger's (pool_id, created_at) index
        f"SELECT l.end_user_id FROM ledger_entry l WHERE l.pool_id = {pool} AND {in_tail('l')}"
        " AND l.end_user_id IS NOT NULL",
        # use the moved window dropped or added (only in the hour after it moves, before a
        # fold), through (application_id, occurred_at)
        f"SELECT l.end_user_id FROM ledger_entry l WHERE {FOLDED_WINDOW_START} <> {ws}"
        f" AND l.application_id = {app} AND l.occurred_at >= {low} AND l.occurred_at < {high}"
        f" AND l.pool_id = {pool} AND l.kind = 'CONSUME'",
        f"SELECT t.end_user_id FROM report_touch t WHERE t.pool_id = {pool} AND t.{since}"
        " AND t.end_user_id IS NOT NULL",
        f"SELECT b.end_user_id FROM end_user_balance b WHERE b.pool_id = {pool} AND EXISTS"
        f" (SELECT 1 FROM report_touch t WHERE t.pool_id = {pool} AND t.end_user_id IS NULL"
        f" AND t.{since})",
    ]
    if borderline:
        parts.append(borderline_end_users(pool))
    # UNION ALL: readers only test membership, and a UNION's de-duplication would size
    # its hash table by the planner's guess at the tail (a third of the ledger)
    found = " UNION ALL ".join(parts)
    if postgres:
        # Unnested from an array, a set the planner guesses at a few rows: the reports'
        # `NOT IN` then hashes it in a table sized for those (grown as needed) instead of
        # one sized for the guess at the tail, tens of thousands of rows, allocated and
        # cleared on every execution (a fifth of the summary and rankings' statement).
        return f"SELECT unnest(ARRAY({found})) AS end_user_id"
    return found


def borderline_end_users(pool: str) -> str:
    """A SELECT of the End Users whose shortfall in the pool depends on the time (class 2),
    `pool` being an SQL expression."""
    return (
        f"SELECT r.end_user_id FROM balance_report r WHERE r.pool_id = {pool}"
        " AND r.shortfall_class = 2"
    )


def unchanged_since_fold(pool: str, ws: str) -> str:
    """A condition true only when `changed_end_users` finds no End User in the pool: no
    ledger entry of the pool and no threshold change since the watermark, and the window
    where the fold left it (`ws`). Each part a probe of an index (and stricter than the
    set: a purchase's entry counts too), so that a report may test it before reading every
    balance from the report rows, the borderline End Users' included."""
    return (
        f"NOT EXISTS (SELECT 1 FROM ledger_entry l WHERE l.pool_id = {pool} AND {in_tail('l')})"
        f" AND NOT EXISTS (SELECT 1 FROM report_touch t WHERE t.pool_id = {pool}"
        f" AND t.created_at >= {WATERMARK}) AND {FOLDED_WINDOW_START} = {ws}"
    )


def among_changed(column: str, postgres: bool, changed: str = CHANGED) -> str:
    """`column` is one of the changed End Users (CTE `changed`). On PostgreSQL as `= ANY`
    of an array built once: the planner, which cannot know how few they are (the tail's
    length is unknown to it), then looks them up by index instead of hashing every
    balance of the pool against them."""
    if postgres:
        return f"{column} = ANY(ARRAY(SELECT end_user_id FROM {changed}))"
    return f"{column} IN (SELECT end_user_id FROM {changed})"
