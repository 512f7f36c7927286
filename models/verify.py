"""Recomputes every counter from the ledger (docs/ledger.md rule 1) and reports each difference.

Signs in the ledger: PURCHASE and ALLOCATE are positive; RELEASE, CONSUME and EXPIRE are
negative. Entries with an End User move that End User's credits; an EXPIRE without one
expires a lot's unallocated part."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from models.rollups import BILLING_WATERMARK, truncated_sql
from models.sql import Sql, transaction

_SUMS = """
    SUM(CASE WHEN kind = 'PURCHASE' THEN amount ELSE 0 END) AS purchased,
    SUM(CASE WHEN kind IN ('ALLOCATE', 'RELEASE') THEN amount ELSE 0 END) AS allocated,
    -SUM(CASE WHEN kind = 'CONSUME' THEN amount ELSE 0 END) AS used,
    -SUM(CASE WHEN kind = 'EXPIRE' THEN amount ELSE 0 END) AS expired,
    SUM(CASE WHEN end_user_id IS NOT NULL THEN amount ELSE 0 END) AS held,
    SUM(CASE WHEN kind = 'PURCHASE' OR (kind = 'EXPIRE' AND end_user_id IS NULL) THEN amount
             WHEN kind IN ('ALLOCATE', 'RELEASE') THEN -amount ELSE 0 END) AS unallocated
"""


def _compare(
    what: str, counters: dict[Any, dict[str, int]], sums: dict[Any, dict[str, int]], names: dict
) -> list[str]:
    problems = []
    for key in sorted(set(counters) | set(sums), key=str):
        have = counters.get(key, {})
        want = sums.get(key, {})
        for counter, summed in names.items():
            a = int(have.get(counter) or 0)
            b = int(want.get(summed) or 0)
            if a != b:
                problems.append(f"{what} {key}: {counter} is {a}, the ledger says {b}")
    return problems


async def verify_ledger() -> list[str]:
    """Every difference between a counter and its ledger sum, plus every broken lot
    conservation (credits = unallocated + held + used + expired), every application
    whose End User count is not its number of End Users, and every billing rollup that
    differs from the ledger entries it folded; [] when all agree."""
    return await transaction(_verify)


_HELD = {"allocated": "allocated", "used": "used", "expired": "expired", "remaining": "held"}


@dataclass(frozen=True)
class _Counters:
    """Counters kept in `table`, one row per `keys`, each equal to the ledger sum `names`
    maps it to (counter -> sum), the ledger grouped by the same keys."""

    what: str
    keys: tuple[str, ...]
    table: str  # FROM what the counter rows are read (with their key columns)
    names: dict[str, str]
    entries: str = ""  # which ledger entries count (a WHERE condition)


_CHECKS = (
    _Counters(
        "pool",
        ("pool_id",),
        "(SELECT id AS pool_id, * FROM credit_pool) AS pool",
        {
            "purchased": "purchased",
            "allocated": "allocated",
            "used": "used",
            "expired": "expired",
            "end_user_remaining": "held",
        },
    ),
    _Counters(
        "End User balance",
        ("end_user_id", "pool_id"),
        "end_user_balance",
        _HELD,
        "end_user_id IS NOT NULL",
    ),
    _Counters(
        "allocation", ("end_user_id", "lot_id"), "allocation", _HELD, "end_user_id IS NOT NULL"
    ),
    _Counters(
        "lot",
        ("lot_id",),
        "(SELECT id AS lot_id, * FROM credit_pack) AS lot",
        {
            "credits": "purchased",
            "unallocated": "unallocated",
            "used": "used",
            "expired": "expired",
        },
    ),
)


def _by(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[Any, dict[str, Any]]:
    return {tuple(row[k] for k in keys): row for row in rows}


async def _verify(db: Sql) -> list[str]:
    problems: list[str] = []
    read: dict[str, dict[Any, dict[str, Any]]] = {}
    for check in _CHECKS:
        keys = ", ".join(check.keys)
        where = f" WHERE {check.entries}" if check.entries else ""
        sums = await db.rows(f"SELECT {keys}, {_SUMS} FROM ledger_entry{where} GROUP BY {keys}")
        counters = _by(await db.rows(f"SELECT * FROM {check.table}"), check.keys)
        problems += _compare(check.what, counters, _by(sums, check.keys), check.names)
        read[check.what] = counters
    allocations, lots = read["allocation"], read["lot"]
    problems += _compare(
        "application",
        _by(
            await db.rows(
                "SELECT application_id, SUM(delta) AS counted FROM end_user_count"
                " GROUP BY application_id"
            ),
            ("application_id",),
        ),
        _by(
            await db.rows(
                "SELECT application_id, COUNT(*) AS end_users FROM end_user GROUP BY application_id"
            ),
            ("application_id",),
        ),
        {"counted": "end_users"},
    )
    held_by_lot: dict[Any, int] = defaultdict(int)
    for (_, lot_id), allocation in allocations.items():
        held_by_lot[(lot_id,)] += allocation["remaining"]
    for key, lot in lots.items():
        total = lot["unallocated"] + held_by_lot[key] + lot["used"] + lot["expired"]
        if total != lot["credits"]:
            problems.append(
                f"lot {key}: {lot['credits']} credits but unallocated + held + used + expired"
                f" = {total}"
            )
    problems += await _billing_rollups(db)
    return problems


async def _billing_rollups(db: Sql) -> list[str]:
    """The billing rollups against the ledger entries created before their watermark."""
    folded = f"created_at < {BILLING_WATERMARK}"
    day, month = truncated_sql(db, "day", "created_at"), truncated_sql(db, "month", "created_at")
    keys = ("pool_id", "lot_id", "day")
    sums = await db.rows(
        f"SELECT pool_id, lot_id, {day} AS day,"
        " SUM(CASE WHEN kind IN ('PURCHASE', 'CONSUME', 'EXPIRE') THEN amount ELSE 0 END)"
        f" AS changed, {_SUMS}, SUM(CASE WHEN kind = 'PURCHASE' THEN 1 ELSE 0 END) AS purchases"
        f" FROM ledger_entry WHERE lot_id IS NOT NULL AND {folded} GROUP BY 1, 2, 3"
    )
    problems = _compare(
        "billing day",
        _by(await db.rows("SELECT * FROM billing_rollup_day"), keys),
        _by(sums, keys),
        {name: name for name in _BILLED},
    )
    active = await db.rows(
        f"SELECT DISTINCT pool_id, {month} AS month, end_user_id FROM ledger_entry"
        f" WHERE kind = 'CONSUME' AND end_user_id IS NOT NULL AND {folded}"
    )
    kept = await db.rows("SELECT pool_id, month, end_user_id FROM billing_active_month")
    wanted = {tuple(row.values()) for row in active}
    have = {tuple(row.values()) for row in kept}
    problems += [f"billing active End User {key}: not in the rollup" for key in wanted - have]
    problems += [f"billing active End User {key}: no such consumption" for key in have - wanted]
    return problems


_BILLED = ("changed", "purchased", "used", "expired", "allocated", "purchases")
