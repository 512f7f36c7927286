"""Recomputes every counter from the ledger (docs/ledger.md rule 1) and reports each difference.

Signs in the ledger: PURCHASE and ALLOCATE are positive; RELEASE, CONSUME and EXPIRE are
negative. Entries with an End User move that End User's credits; an EXPIRE without one
expires a lot's unallocated part."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

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
    conservation (credits = unallocated + held + used + expired) and every application
    whose End User count is not its number of End Users; [] when all agree."""
    return await transaction(_verify)


async def _verify(db: Sql) -> list[str]:
    problems: list[str] = []

    def by(rows: list[dict[str, Any]], *keys: str) -> dict[Any, dict[str, Any]]:
        return {tuple(row[k] for k in keys): row for row in rows}

    pool_sums = by(
        await db.rows(f"SELECT pool_id, {_SUMS} FROM ledger_entry GROUP BY pool_id"), "pool_id"
    )
    pools = by(await db.rows("SELECT id AS pool_id, * FROM credit_pool"), "pool_id")
    problems += _compare(
        "pool",
        pools,
        pool_sums,
        {
            "purchased": "purchased",
            "allocated": "allocated",
            "used": "used",
            "expired": "expired",
            "end_user_remaining": "held",
        },
    )
    balance_sums = by(
        await db.rows(
            f"SELECT end_user_id, pool_id, {_SUMS} FROM ledger_entry"
            " WHERE end_user_id IS NOT NULL GROUP BY end_user_id, pool_id"
        ),
        "end_user_id",
        "pool_id",
    )
    balances = by(await db.rows("SELECT * FROM end_user_balance"), "end_user_id", "pool_id")
    problems += _compare(
        "End User balance",
        balances,
        balance_sums,
        {"allocated": "allocated", "used": "used", "expired": "expired", "remaining": "held"},
    )
    allocation_sums = by(
        await db.rows(
            f"SELECT end_user_id, lot_id, {_SUMS} FROM ledger_entry"
            " WHERE end_user_id IS NOT NULL GROUP BY end_user_id, lot_id"
        ),
        "end_user_id",
        "lot_id",
    )
    allocations = by(await db.rows("SELECT * FROM allocation"), "end_user_id", "lot_id")
    problems += _compare(
        "allocation",
        allocations,
        allocation_sums,
        {"allocated": "allocated", "used": "used", "expired": "expired", "remaining": "held"},
    )
    lot_sums = by(
        await db.rows(f"SELECT lot_id, {_SUMS} FROM ledger_entry GROUP BY lot_id"), "lot_id"
    )
    lots = by(await db.rows("SELECT id AS lot_id, * FROM credit_pack"), "lot_id")
    problems += _compare(
        "lot",
        lots,
        lot_sums,
        {
            "credits": "purchased",
            "unallocated": "unallocated",
            "used": "used",
            "expired": "expired",
        },
    )
    problems += _compare(
        "application",
        by(
            await db.rows(
                "SELECT application_id, SUM(delta) AS counted FROM end_user_count"
                " GROUP BY application_id"
            ),
            "application_id",
        ),
        by(
            await db.rows(
                "SELECT application_id, COUNT(*) AS end_users FROM end_user GROUP BY application_id"
            ),
            "application_id",
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
    return problems
