"""The expiry sweep (docs/ledger.md rule 4): the remainder of every lot past `expires_at` becomes
EXPIRE entries exactly once, however many processes sweep at once.

Until the sweep runs, expired credits are already unusable: every draw filters lots by the
database clock. The sweep only books them. It follows the ledger's lock order (End User
balances, then the lot, then the pool); two sweepers of one lot queue on those locks and the
second finds the lot marked swept.

Ahead of it, `warn_expiring_lots` announces once per lot the credits that will expire
within a window (docs/webhooks.md#events): a warner claims a lot by marking it in one
conditional UPDATE and writes its outbox rows in that transaction, so of several warners
one announces each lot, and nothing is announced for a rolled-back claim."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from models.balance_rules import status_sql
from models.balances import (
    END_USER_BALANCE_COLUMNS,
    NEXT_END_USER_VERSION,
    NEXT_POOL_VERSION,
    POOL_COLUMNS,
    BalanceChange,
    EndUserBalanceSnapshot,
    PoolSnapshot,
    write_balance_events,
)
from models.billing import as_utc, time_param
from models.events import CreditsExpiring
from models.ledger import Draw, insert_ledger_entries
from models.outbox import write_events
from models.records import LedgerEntryKind
from models.sql import Sql, transaction

SWEEP_BATCH = 100


@dataclass(frozen=True, slots=True)
class SweepResult:
    lots: int
    credits: int


class _HoldersChanged(Exception):
    """An allocation landed in the lot between reading its holders and locking it."""


async def expire_lots(limit: int = SWEEP_BATCH) -> SweepResult:
    """Sweeps up to `limit` expired, unswept lots, each in its own transaction."""

    async def due(db: Sql) -> list[int]:
        rows = await db.rows(
            "SELECT id FROM credit_pack WHERE expires_at <= now() AND swept_at IS NULL"
            " ORDER BY expires_at, id LIMIT $1",
            limit,
        )
        return [row["id"] for row in rows]

    lots = 0
    credits = 0
    for lot_id in await transaction(due):
        swept = await _sweep_lot(lot_id)
        if swept is not None:
            lots += 1
            credits += swept
    return SweepResult(lots=lots, credits=credits)


async def _sweep_lot(lot_id: int) -> int | None:
    """Expires one lot; the credits it expired, or None when another sweeper did it."""
    while True:
        try:
            return await transaction(lambda db: _sweep_lot_once(db, lot_id))
        except _HoldersChanged:
            continue


async def _sweep_lot_once(db: Sql, lot_id: int) -> int | None:
    holders = await db.rows(
        "SELECT DISTINCT end_user_id FROM allocation WHERE lot_id = $1 AND remaining > 0"
        " ORDER BY end_user_id",
        lot_id,
    )
    holder_ids = [row["end_user_id"] for row in holders]
    lot = await db.row(
        "SELECT l.pool_id, p.application_id, p.key FROM credit_pack l"
        " JOIN credit_pool p ON p.id = l.pool_id WHERE l.id = $1",
        lot_id,
    )
    assert lot is not None
    pool_id = lot["pool_id"]
    for end_user_id in holder_ids:  # balance rows first, in id order
        await db.rows(
            "SELECT id FROM end_user_balance WHERE end_user_id = $1 AND pool_id = $2 FOR UPDATE",
            end_user_id,
            pool_id,
        )
    locked = await db.row(
        "SELECT unallocated FROM credit_pack WHERE id = $1 AND swept_at IS NULL"
        " AND expires_at <= now() FOR UPDATE",
        lot_id,
    )
    if locked is None:
        return None  # swept by another process meanwhile
    allocations = await db.rows(
        "SELECT id, end_user_id, remaining FROM allocation WHERE lot_id = $1 AND remaining > 0"
        " ORDER BY end_user_id",
        lot_id,
    )
    if not {row["end_user_id"] for row in allocations} <= set(holder_ids):
        raise _HoldersChanged
    changes: list[BalanceChange] = []
    held_total = 0
    for allocation in allocations:
        amount = allocation["remaining"]
        held_total += amount
        await db.run(
            "UPDATE allocation SET expired = expired + $2, remaining = 0 WHERE id = $1",
            allocation["id"],
            amount,
        )
        row = await db.row(
            "UPDATE end_user_balance SET expired = expired + $3, remaining = remaining - $3,"
            " status = " + status_sql("allocated", "remaining - $3") + ","
            f" {NEXT_END_USER_VERSION}"
            f" WHERE end_user_id = $1 AND pool_id = $2 RETURNING {END_USER_BALANCE_COLUMNS}",
            allocation["end_user_id"],
            pool_id,
            amount,
        )
        assert row is not None
        changes.append((EndUserBalanceSnapshot.from_row(row), -amount))
        await insert_ledger_entries(
            db,
            lot["application_id"],
            pool_id,
            allocation["end_user_id"],
            LedgerEntryKind.EXPIRE,
            [Draw(lot_id=lot_id, credits=amount)],
            -1,
        )
    unallocated = locked["unallocated"]
    if unallocated > 0:
        await insert_ledger_entries(
            db,
            lot["application_id"],
            pool_id,
            None,
            LedgerEntryKind.EXPIRE,
            [Draw(lot_id=lot_id, credits=unallocated)],
            -1,
        )
    total = held_total + unallocated
    await db.run(
        "UPDATE credit_pack SET expired = expired + $2, unallocated = 0, swept_at = now()"
        " WHERE id = $1",
        lot_id,
        total,
    )
    if total > 0:
        row = await db.row(
            "UPDATE credit_pool SET expired = expired + $2,"
            f" end_user_remaining = end_user_remaining - $3, {NEXT_POOL_VERSION}"
            f" WHERE id = $1 RETURNING {POOL_COLUMNS}",
            pool_id,
            total,
            held_total,
        )
        assert row is not None
        changes.append((PoolSnapshot.from_row(row), -total))
        await write_balance_events(
            db, lot["application_id"], lot["key"], LedgerEntryKind.EXPIRE, changes
        )
    return total


async def warn_expiring_lots(window: timedelta, limit: int = SWEEP_BATCH) -> int:
    """Announces up to `limit` lots that expire within `window` from now, not expired yet
    and not announced before, each in its own transaction: one CreditsExpiring event for
    the pool (the lot's remaining) and one per End User holding some of it, none for an
    empty lot. Each lot is announced once however many warners run; the events written."""
    until = datetime.now(UTC) + window

    async def due(db: Sql) -> list[int]:
        rows = await db.rows(
            "SELECT id FROM credit_pack WHERE expires_at > now() AND expires_at <= $1"
            " AND expiry_warned_at IS NULL AND swept_at IS NULL ORDER BY expires_at, id LIMIT $2",
            time_param(db, until),
            limit,
        )
        return [row["id"] for row in rows]

    written = 0
    for lot_id in await transaction(due):
        written += await transaction(lambda db, lot_id=lot_id: _warn_lot(db, lot_id, until))
    return written


async def _warn_lot(db: Sql, lot_id: int, until: datetime) -> int:
    """Claims the lot's announcement (another warner may have it already) and writes its
    events; how many."""
    lot = await db.row(
        "UPDATE credit_pack SET expiry_warned_at = now() WHERE id = $1"
        " AND expiry_warned_at IS NULL AND swept_at IS NULL AND expires_at > now()"
        " AND expires_at <= $2 RETURNING pool_id, credits, used, expired, unallocated, expires_at",
        lot_id,
        time_param(db, until),
    )
    remaining = 0 if lot is None else lot["credits"] - lot["used"] - lot["expired"]
    if lot is None or remaining == 0:
        return 0
    pool = await db.row("SELECT application_id, key FROM credit_pool WHERE id = $1", lot["pool_id"])
    assert pool is not None
    holders = await db.rows(
        "SELECT end_user_id, SUM(remaining) AS remaining FROM allocation WHERE lot_id = $1"
        " AND remaining > 0 GROUP BY end_user_id ORDER BY end_user_id",
        lot_id,
    )
    shares = [(None, remaining, lot["unallocated"])]
    shares += [(row["end_user_id"], int(row["remaining"]), None) for row in holders]
    at = datetime.now(UTC).isoformat()
    events = [
        CreditsExpiring(
            application_id=pool["application_id"],
            pool_id=lot["pool_id"],
            pool=pool["key"],
            end_user_id=end_user_id,
            at=at,
            pack_id=lot_id,
            remaining=held,
            unallocated=unallocated,
            expires_at=as_utc(lot["expires_at"]).isoformat(),
        )
        for end_user_id, held, unallocated in shares
    ]
    await write_events(db, pool["application_id"], events)
    return len(events)
