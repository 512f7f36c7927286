"""The ledger operations: purchase, allocate, release and consume credits.

Each runs in one transaction that writes its ledger entries, updates every counter they
change and writes the outbox rows announcing the new balances (docs/ledger.md#the-outbox).

Lock order, the same in every operation (and in `models.expiry`), so that concurrent
writers never deadlock: End User balance rows (by id), then lots (in FIFO order, which is a
fixed total order), then the pool row. An End User's allocation rows are only written by a
transaction that holds that End User's balance row, so they need no lock of their own.
Expiry is decided by the database clock (`now()`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models import clock
from models.balance_rules import status_sql
from models.balances import (
    NEXT_POOL_VERSION,
    POOL_COLUMNS,
    EndUserBalanceSnapshot,
    PoolSnapshot,
    write_balance_events,
)
from models.consume_batch import Consumption
from models.consumption_combiner import submit_consumption
from models.credits import MAX_TOTAL
from models.draws import (
    FIFO,
    LIVE_LOT,
    MAX_TEXT_LENGTH,
    ConsumeResult,
    Draw,
    aware,
    ensure_end_user_balance,
    insert_ledger_entries,
    live_allocations,
    lock_end_user_balance,
    take_fifo,
    validate_credits,
    validate_text,
)
from models.errors import InsufficientCredits, ValidationFailed
from models.idempotency import claim_key, request_fingerprint, store_result, validate_key
from models.records import LedgerEntryKind
from models.references import EndUserRef, PoolRef, resolve_end_user, resolve_pool
from models.sql import Sql, transaction


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    pack_id: int
    pool: PoolSnapshot | None
    replayed: bool


@dataclass(frozen=True, slots=True)
class BalanceResult:
    balance: EndUserBalanceSnapshot
    replayed: bool


async def _update_pool(db: Sql, pool_id: int, assignments: str, *args: Any) -> PoolSnapshot:
    row = await db.row(
        f"UPDATE credit_pool SET {assignments}, {NEXT_POOL_VERSION} WHERE id = $1"
        f" RETURNING {POOL_COLUMNS}",
        pool_id,
        *args,
    )
    assert row is not None  # the pool was resolved in this application
    return PoolSnapshot.from_row(row)


async def _begin(
    db: Sql,
    application_id: int,
    idempotency_key: str | None,
    operation: str,
    arguments: dict[str, Any],
) -> tuple[int | None, Any]:
    """Claims the idempotency key, if any: (record id to store the result in, replay)."""
    if idempotency_key is None:
        return None, None
    claim = await claim_key(
        db, application_id, idempotency_key, operation, request_fingerprint(operation, arguments)
    )
    return claim.record_id, claim.replay


# ----------------------------------------------------------------------------------- purchase


async def purchase_credits(
    application_id: int,
    pool_key: str,
    credits: int,
    *,
    expires_at: datetime | None = None,
    package: str | None = None,
    reference: str | None = None,
    idempotency_key: str | None = None,
    actor: str | None = None,
) -> PurchaseResult:
    """Adds a lot of `credits` to the pool's unallocated part (PURCHASE entry). The pool's
    purchased total may not pass 2,147,483,647."""
    validate_credits(credits)
    validate_key(idempotency_key)
    validate_text(package, "package", MAX_TEXT_LENGTH)
    validate_text(reference, "reference", MAX_TEXT_LENGTH)
    expires_at = aware(expires_at, "expiresAt")
    if expires_at is not None and expires_at <= clock.now():
        raise ValidationFailed("expiresAt must be in the future", field="expiresAt")

    async def work(db: Sql) -> PurchaseResult:
        pool = await resolve_pool(db, application_id, pool_key)
        arguments = {
            "pool": pool.id,
            "credits": credits,
            "expires_at": expires_at,
            "package": package,
            "reference": reference,
        }
        record_id, replay = await _begin(db, application_id, idempotency_key, "purchase", arguments)
        if replay is not None:
            return PurchaseResult(pack_id=replay["pack_id"], pool=None, replayed=True)
        row = await db.row(
            f"UPDATE credit_pool SET purchased = purchased + $2, {NEXT_POOL_VERSION}"
            f" WHERE id = $1 AND purchased + $2 <= {MAX_TOTAL} RETURNING {POOL_COLUMNS}",
            pool.id,
            credits,
        )
        if row is None:
            raise ValidationFailed(
                f"the pool's purchased total would pass {MAX_TOTAL:,}", field="credits"
            )
        snapshot = PoolSnapshot.from_row(row)
        pack_id = await db.value(
            "INSERT INTO credit_pack (pool_id, credits, unallocated, used, expired, purchased_at,"
            " expires_at, package, reference) VALUES ($1, $2, $2, 0, 0, now(), $3, $4, $5)"
            " RETURNING id",
            pool.id,
            credits,
            expires_at,
            package,
            reference,
        )
        await insert_ledger_entries(
            db,
            application_id,
            pool.id,
            None,
            LedgerEntryKind.PURCHASE,
            [Draw(lot_id=pack_id, credits=credits)],
            1,
            idempotency_key=idempotency_key,
            actor=actor,
        )
        await write_balance_events(
            db, application_id, pool.key, LedgerEntryKind.PURCHASE, [(snapshot, credits)]
        )
        if record_id is not None:
            await store_result(db, record_id, {"pack_id": pack_id})
        return PurchaseResult(pack_id=pack_id, pool=snapshot, replayed=False)

    return await transaction(work)


# ---------------------------------------------------------------------- allocate and release


async def _take_back(
    db: Sql, end_user_id: int, pool_id: int, credits: int
) -> tuple[EndUserBalanceSnapshot, list[Draw]]:
    """Takes `credits` off the End User's allocated credits and unexpired allocations in FIFO
    order, or fails whole."""
    balance = await lock_end_user_balance(
        db,
        end_user_id,
        pool_id,
        "allocated = allocated - $3, remaining = remaining - $3, status = "
        + status_sql("allocated - $3", "remaining - $3"),
        "remaining >= $3",
        credits,
    )
    draws = (
        take_fifo(await live_allocations(db, end_user_id, pool_id), credits, "remaining")
        if balance
        else []
    )
    if balance is None or not draws:
        raise InsufficientCredits(
            f"the End User holds fewer than {credits:,} unexpired credits in this pool",
            field="credits",
        )
    for draw in draws:
        await db.run(
            "UPDATE allocation SET allocated = allocated - $2, remaining = remaining - $2"
            " WHERE id = $1",
            draw.allocation_id,
            draw.credits,
        )
    return balance, draws


async def _resolve(
    db: Sql, application_id: int, pool_key: str, end_user: EndUserRef
) -> tuple[PoolRef, int]:
    pool = await resolve_pool(db, application_id, pool_key)
    end_user_id = await resolve_end_user(db, application_id, end_user)
    return pool, end_user_id


async def _allocate(
    db: Sql, pool: PoolRef, end_user_id: int, credits: int
) -> tuple[EndUserBalanceSnapshot, list[Draw]]:
    """Takes `credits` from the pool's unexpired lots in FIFO order into the End User's
    allocations, or fails whole."""
    await ensure_end_user_balance(db, end_user_id, pool.id)
    balance = await lock_end_user_balance(
        db,
        end_user_id,
        pool.id,
        "allocated = allocated + $3, remaining = remaining + $3, status = "
        + status_sql("allocated + $3", "remaining + $3"),
        f"allocated + $3 <= {MAX_TOTAL}",
        credits,
    )
    if balance is None:
        raise ValidationFailed(
            f"the End User's allocated total would pass {MAX_TOTAL:,}", field="credits"
        )
    lots = await db.rows(
        "SELECT l.id AS lot_id, l.unallocated FROM credit_pack l"
        f" WHERE l.pool_id = $1 AND l.unallocated > 0 AND {LIVE_LOT}"
        f" ORDER BY {FIFO} FOR UPDATE",
        pool.id,
    )
    draws = take_fifo(lots, credits, "unallocated")
    if not draws:
        available = sum(lot["unallocated"] for lot in lots)
        raise InsufficientCredits(
            f"the pool has {available:,} unallocated credits, {credits:,} requested",
            field="credits",
        )
    for draw in draws:
        await db.run(
            "UPDATE credit_pack SET unallocated = unallocated - $2 WHERE id = $1",
            draw.lot_id,
            draw.credits,
        )
        await db.run(
            "INSERT INTO allocation (end_user_id, pool_id, lot_id, allocated, used, expired,"
            " remaining) VALUES ($1, $2, $3, $4, 0, 0, $4)"
            " ON CONFLICT (end_user_id, lot_id) DO UPDATE SET"
            " allocated = allocation.allocated + excluded.allocated,"
            " remaining = allocation.remaining + excluded.remaining",
            end_user_id,
            pool.id,
            draw.lot_id,
            draw.credits,
        )
    return balance, draws


async def _release(
    db: Sql, pool: PoolRef, end_user_id: int, credits: int
) -> tuple[EndUserBalanceSnapshot, list[Draw]]:
    """Gives `credits` of the End User's unexpired allocations back to their lots, in FIFO
    order, or fails whole."""
    balance, draws = await _take_back(db, end_user_id, pool.id, credits)
    for draw in draws:
        await db.run(
            "UPDATE credit_pack SET unallocated = unallocated + $2 WHERE id = $1",
            draw.lot_id,
            draw.credits,
        )
    return balance, draws


Mover = Callable[[Sql, PoolRef, int, int], Awaitable[tuple[EndUserBalanceSnapshot, list[Draw]]]]


async def _move_credits(
    kind: LedgerEntryKind,
    move: Mover,
    application_id: int,
    pool_key: str,
    end_user: EndUserRef,
    credits: int,
    idempotency_key: str | None,
    actor: str | None,
) -> BalanceResult:
    """Allocation and release: the End User's credits move to or from the pool's
    unallocated part, one entry per lot, in one transaction."""
    validate_credits(credits)
    end_user.validate()
    validate_key(idempotency_key)
    sign = 1 if kind == LedgerEntryKind.ALLOCATE else -1
    operator = "+" if sign > 0 else "-"

    async def work(db: Sql) -> BalanceResult:
        pool, end_user_id = await _resolve(db, application_id, pool_key, end_user)
        arguments = {"pool": pool.id, "end_user": end_user_id, "credits": credits}
        record_id, replay = await _begin(
            db, application_id, idempotency_key, kind.value.lower(), arguments
        )
        if replay is not None:
            return BalanceResult(EndUserBalanceSnapshot.from_json(replay), replayed=True)
        balance, draws = await move(db, pool, end_user_id, credits)
        await insert_ledger_entries(
            db,
            application_id,
            pool.id,
            end_user_id,
            kind,
            draws,
            sign,
            idempotency_key=idempotency_key,
            actor=actor,
        )
        if record_id is not None:
            await store_result(db, record_id, balance.to_json())
        pool_snapshot = await _update_pool(
            db,
            pool.id,
            f"allocated = allocated {operator} $2,"
            f" end_user_remaining = end_user_remaining {operator} $2",
            credits,
        )
        await write_balance_events(
            db, application_id, pool.key, kind, [(balance, sign * credits), (pool_snapshot, 0)]
        )
        return BalanceResult(balance, replayed=False)

    return await transaction(work)


async def allocate_credits(
    application_id: int,
    pool_key: str,
    end_user: EndUserRef,
    credits: int,
    *,
    idempotency_key: str | None = None,
    actor: str | None = None,
) -> BalanceResult:
    """Moves `credits` from the pool's unallocated part to the End User, lot by lot in FIFO
    order, from unexpired lots only (one ALLOCATE entry per lot)."""
    return await _move_credits(
        LedgerEntryKind.ALLOCATE,
        _allocate,
        application_id,
        pool_key,
        end_user,
        credits,
        idempotency_key,
        actor,
    )


async def release_credits(
    application_id: int,
    pool_key: str,
    end_user: EndUserRef,
    credits: int,
    *,
    idempotency_key: str | None = None,
    actor: str | None = None,
) -> BalanceResult:
    """Returns `credits` of the End User's unexpired allocation to the pool's unallocated
    part, drawn in FIFO order (one RELEASE entry per lot)."""
    return await _move_credits(
        LedgerEntryKind.RELEASE,
        _release,
        application_id,
        pool_key,
        end_user,
        credits,
        idempotency_key,
        actor,
    )


# ------------------------------------------------------------------------------------ consume


async def consume_credits(
    application_id: int,
    pool_key: str,
    end_user: EndUserRef,
    credits: int,
    feature: str,
    *,
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    metadata: dict[str, Any] | None = None,
    actor: str | None = None,
) -> ConsumeResult:
    """Debits `credits` from the End User's unexpired allocations in FIFO order, whole or not
    at all (INSUFFICIENT_CREDITS): one usage event, one CONSUME entry per lot drawn.

    Concurrent consumptions of one application in this process are committed together
    (see `models.consumption_combiner`); each keeps its own result and rules."""
    consumption = Consumption(
        end_user=end_user,
        pool=pool_key,
        credits=credits,
        feature=feature,
        idempotency_key=idempotency_key,
        occurred_at=occurred_at,
        metadata=metadata,
        actor=actor,
    )
    return await submit_consumption(application_id, consumption)
