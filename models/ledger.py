"""The ledger operations: purchase, allocate, release and consume credits.

Each runs in one transaction that writes its ledger entries, updates every counter they
change and writes the outbox rows announcing the new balances (SPEC §2.2).

Lock order, the same in every operation (and in `models.expiry`), so that concurrent
writers never deadlock: End User balance rows (by id), then lots (in FIFO order, which is a
fixed total order), then the pool row. An End User's allocation rows are only written by a
transaction that holds that End User's balance row, so they need no lock of their own.
Expiry is decided by the database clock (`now()`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.balances import (
    END_USER_BALANCE_COLUMNS,
    POOL_COLUMNS,
    EndUserBalanceSnapshot,
    PoolSnapshot,
    end_user_status_sql,
    write_balance_events,
)
from models.credits import MAX_TOTAL
from models.errors import InsufficientCredits, ValidationFailed
from models.idempotency import claim_key, request_fingerprint, store_result, validate_key
from models.records import LedgerEntryKind
from models.references import EndUserRef, PoolRef, resolve_end_user, resolve_pool
from models.sql import Sql, dumps, transaction, values_list

MAX_CREDITS_PER_OPERATION = 1_000_000_000
MAX_FEATURE_LENGTH = 100
MAX_TEXT_LENGTH = 200

# Lots an End User can draw from now, first to expire first (never-expiring last).
_LIVE_LOT = "(l.expires_at IS NULL OR l.expires_at > now())"
_FIFO = "l.expires_at ASC NULLS LAST, l.purchased_at ASC, l.id ASC"


@dataclass(frozen=True, slots=True)
class Draw:
    """Credits taken from one lot (through one allocation, for End User draws)."""

    lot_id: int
    credits: int
    allocation_id: int | None = None


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    pack_id: int
    pool: PoolSnapshot | None
    replayed: bool


@dataclass(frozen=True, slots=True)
class BalanceResult:
    balance: EndUserBalanceSnapshot
    replayed: bool


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    balance: EndUserBalanceSnapshot
    usage_event_id: int
    replayed: bool


def validate_credits(credits: int) -> None:
    if isinstance(credits, bool) or not isinstance(credits, int):
        raise ValidationFailed("credits must be an integer", field="credits")
    if not 1 <= credits <= MAX_CREDITS_PER_OPERATION:
        raise ValidationFailed(
            f"credits must be between 1 and {MAX_CREDITS_PER_OPERATION:,}", field="credits"
        )


def validate_text(value: str | None, field: str, limit: int, *, required: bool = False) -> None:
    if value is None:
        if required:
            raise ValidationFailed(f"{field} is required", field=field)
        return
    if not 0 < len(value) <= limit or not value.strip():
        raise ValidationFailed(f"{field} must be 1 to {limit} characters", field=field)


def aware(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValidationFailed(f"{field} must carry a time zone", field=field)
    return value.astimezone(UTC)


def take_fifo(available: list[dict[str, Any]], credits: int, column: str) -> list[Draw]:
    """Splits `credits` over rows already in FIFO order; [] if they do not hold enough."""
    draws: list[Draw] = []
    wanted = credits
    for row in available:
        if wanted == 0:
            break
        take = min(wanted, row[column])
        if take > 0:
            draws.append(Draw(lot_id=row["lot_id"], credits=take, allocation_id=row.get("id")))
            wanted -= take
    return draws if wanted == 0 else []


async def insert_ledger_entries(
    db: Sql,
    application_id: int,
    pool_id: int,
    end_user_id: int | None,
    kind: LedgerEntryKind,
    draws: list[Draw],
    sign: int,
    *,
    feature: str | None = None,
    idempotency_key: str | None = None,
    actor: str | None = None,
    usage_event_id: int | None = None,
    occurred_at: datetime | None = None,
) -> None:
    args: list[Any] = []
    for draw in draws:
        args += [application_id, pool_id, draw.lot_id, end_user_id, kind.value]
        args += [sign * draw.credits, feature, idempotency_key, actor, usage_event_id]
        if occurred_at is not None:
            args.append(occurred_at)
    # Without an explicit occurredAt an entry occurs when it is written (database clock).
    columns, suffix = (11, ", now()") if occurred_at is not None else (10, ", now(), now()")
    await db.run(
        "INSERT INTO ledger_entry (application_id, pool_id, lot_id, end_user_id, kind, amount,"
        " feature, idempotency_key, actor, usage_event_id, occurred_at, created_at) VALUES "
        + values_list(len(draws), columns, suffix),
        *args,
    )


async def _update_pool(db: Sql, pool_id: int, assignments: str, *args: Any) -> PoolSnapshot:
    row = await db.row(
        f"UPDATE credit_pool SET {assignments}, version = version + 1 WHERE id = $1"
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
    if expires_at is not None and expires_at <= datetime.now(UTC):
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
            "UPDATE credit_pool SET purchased = purchased + $2, version = version + 1"
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
            db, application_id, pool.key, LedgerEntryKind.PURCHASE, [snapshot]
        )
        if record_id is not None:
            await store_result(db, record_id, {"pack_id": pack_id})
        return PurchaseResult(pack_id=pack_id, pool=snapshot, replayed=False)

    return await transaction(work)


# ---------------------------------------------------------------------- allocate and release


async def lock_end_user_balance(
    db: Sql, end_user_id: int, pool_id: int, assignments: str, condition: str, *args: Any
) -> EndUserBalanceSnapshot | None:
    row = await db.row(
        f"UPDATE end_user_balance SET {assignments}, version = version + 1, updated_at = now()"
        f" WHERE end_user_id = $1 AND pool_id = $2 AND {condition}"
        f" RETURNING {END_USER_BALANCE_COLUMNS}",
        end_user_id,
        pool_id,
        *args,
    )
    return EndUserBalanceSnapshot.from_row(row) if row else None


async def live_allocations(db: Sql, end_user_id: int, pool_id: int) -> list[dict[str, Any]]:
    """The End User's unexpired allocations in the pool, in FIFO order."""
    return await db.rows(
        "SELECT a.id, a.lot_id, a.remaining, l.expires_at, l.purchased_at FROM allocation a"
        " JOIN credit_pack l ON l.id = a.lot_id"
        f" WHERE a.end_user_id = $1 AND a.pool_id = $2 AND a.remaining > 0 AND {_LIVE_LOT}"
        f" ORDER BY {_FIFO}",
        end_user_id,
        pool_id,
    )


async def _draw_from_end_user(
    db: Sql, end_user_id: int, pool_id: int, credits: int, counter: str
) -> tuple[EndUserBalanceSnapshot, list[Draw]]:
    """Takes `credits` off the End User's balance (into `counter`: used, or allocated for a
    release) and off their unexpired allocations in FIFO order, or fails whole."""
    sign = "+" if counter == "used" else "-"  # consumption adds to used, release subtracts
    balance = await lock_end_user_balance(
        db,
        end_user_id,
        pool_id,
        f"{counter} = {counter} {sign} $3,"
        " remaining = remaining - $3, status = " + end_user_status_sql("remaining - $3"),
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
            f"UPDATE allocation SET {counter} = {counter} {sign} $2,"
            " remaining = remaining - $2 WHERE id = $1",
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
    validate_credits(credits)
    end_user.validate()
    validate_key(idempotency_key)

    async def work(db: Sql) -> BalanceResult:
        pool, end_user_id = await _resolve(db, application_id, pool_key, end_user)
        arguments = {"pool": pool.id, "end_user": end_user_id, "credits": credits}
        record_id, replay = await _begin(db, application_id, idempotency_key, "allocate", arguments)
        if replay is not None:
            return BalanceResult(EndUserBalanceSnapshot.from_json(replay), replayed=True)
        await db.run(
            "INSERT INTO end_user_balance (end_user_id, pool_id, allocated, used, expired,"
            " remaining, status, version, updated_at) VALUES ($1, $2, 0, 0, 0, 0, 'EXHAUSTED', 0,"
            " now()) ON CONFLICT (end_user_id, pool_id) DO NOTHING",
            end_user_id,
            pool.id,
        )
        balance = await lock_end_user_balance(
            db,
            end_user_id,
            pool.id,
            "allocated = allocated + $3, remaining = remaining + $3, status = "
            + end_user_status_sql("remaining + $3"),
            f"allocated + $3 <= {MAX_TOTAL}",
            credits,
        )
        if balance is None:
            raise ValidationFailed(
                f"the End User's allocated total would pass {MAX_TOTAL:,}", field="credits"
            )
        lots = await db.rows(
            "SELECT l.id AS lot_id, l.unallocated FROM credit_pack l"
            f" WHERE l.pool_id = $1 AND l.unallocated > 0 AND {_LIVE_LOT}"
            f" ORDER BY {_FIFO} FOR UPDATE",
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
        await insert_ledger_entries(
            db,
            application_id,
            pool.id,
            end_user_id,
            LedgerEntryKind.ALLOCATE,
            draws,
            1,
            idempotency_key=idempotency_key,
            actor=actor,
        )
        if record_id is not None:
            await store_result(db, record_id, balance.to_json())
        pool_snapshot = await _update_pool(
            db,
            pool.id,
            "allocated = allocated + $2, end_user_remaining = end_user_remaining + $2",
            credits,
        )
        await write_balance_events(
            db, application_id, pool.key, LedgerEntryKind.ALLOCATE, [balance, pool_snapshot]
        )
        return BalanceResult(balance, replayed=False)

    return await transaction(work)


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
    validate_credits(credits)
    end_user.validate()
    validate_key(idempotency_key)

    async def work(db: Sql) -> BalanceResult:
        pool, end_user_id = await _resolve(db, application_id, pool_key, end_user)
        arguments = {"pool": pool.id, "end_user": end_user_id, "credits": credits}
        record_id, replay = await _begin(db, application_id, idempotency_key, "release", arguments)
        if replay is not None:
            return BalanceResult(EndUserBalanceSnapshot.from_json(replay), replayed=True)
        balance, draws = await _draw_from_end_user(db, end_user_id, pool.id, credits, "allocated")
        await insert_ledger_entries(
            db,
            application_id,
            pool.id,
            end_user_id,
            LedgerEntryKind.RELEASE,
            draws,
            -1,
            idempotency_key=idempotency_key,
            actor=actor,
        )
        if record_id is not None:
            await store_result(db, record_id, balance.to_json())
        for draw in draws:
            await db.run(
                "UPDATE credit_pack SET unallocated = unallocated + $2 WHERE id = $1",
                draw.lot_id,
                draw.credits,
            )
        pool_snapshot = await _update_pool(
            db,
            pool.id,
            "allocated = allocated - $2, end_user_remaining = end_user_remaining - $2",
            credits,
        )
        await write_balance_events(
            db, application_id, pool.key, LedgerEntryKind.RELEASE, [balance, pool_snapshot]
        )
        return BalanceResult(balance, replayed=False)

    return await transaction(work)


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
    at all (INSUFFICIENT_CREDITS): one usage event, one CONSUME entry per lot drawn."""
    validate_credits(credits)
    end_user.validate()
    validate_key(idempotency_key)
    validate_text(feature, "feature", MAX_FEATURE_LENGTH, required=True)
    occurred_at = aware(occurred_at, "occurredAt")

    async def work(db: Sql) -> ConsumeResult:
        pool, end_user_id = await _resolve(db, application_id, pool_key, end_user)
        arguments = {
            "pool": pool.id,
            "end_user": end_user_id,
            "credits": credits,
            "feature": feature,
            "occurred_at": occurred_at,
        }
        record_id, replay = await _begin(db, application_id, idempotency_key, "consume", arguments)
        if replay is not None:
            return ConsumeResult(
                EndUserBalanceSnapshot.from_json(replay["balance"]),
                usage_event_id=replay["usage_event_id"],
                replayed=True,
            )
        return await _consume(
            db,
            application_id,
            pool,
            end_user_id,
            credits,
            feature,
            record_id=record_id,
            idempotency_key=idempotency_key,
            occurred_at=occurred_at,
            metadata=metadata,
            actor=actor,
        )

    return await transaction(work)


async def _consume(
    db: Sql,
    application_id: int,
    pool: PoolRef,
    end_user_id: int,
    credits: int,
    feature: str,
    *,
    record_id: int | None,
    idempotency_key: str | None,
    occurred_at: datetime | None,
    metadata: dict[str, Any] | None,
    actor: str | None,
) -> ConsumeResult:
    balance, draws = await _draw_from_end_user(db, end_user_id, pool.id, credits, "used")
    usage_event_id = await db.value(
        "INSERT INTO usage_event (application_id, pool_id, end_user_id, credits, feature,"
        " idempotency_key, metadata, occurred_at, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()), now()) RETURNING id",
        application_id,
        pool.id,
        end_user_id,
        credits,
        feature,
        idempotency_key,
        None if metadata is None else dumps(metadata),
        occurred_at,
    )
    await insert_ledger_entries(
        db,
        application_id,
        pool.id,
        end_user_id,
        LedgerEntryKind.CONSUME,
        draws,
        -1,
        feature=feature,
        idempotency_key=idempotency_key,
        actor=actor,
        usage_event_id=usage_event_id,
        occurred_at=occurred_at,
    )
    if record_id is not None:
        await store_result(
            db, record_id, {"balance": balance.to_json(), "usage_event_id": usage_event_id}
        )
    # The shared rows (lots, then the pool) come last to hold their locks briefly.
    for draw in draws:
        await db.run(
            "UPDATE credit_pack SET used = used + $2 WHERE id = $1", draw.lot_id, draw.credits
        )
    pool_snapshot = await _update_pool(
        db,
        pool.id,
        "used = used + $2, end_user_remaining = end_user_remaining - $2",
        credits,
    )
    await write_balance_events(
        db, application_id, pool.key, LedgerEntryKind.CONSUME, [balance, pool_snapshot]
    )
    return ConsumeResult(balance, usage_event_id=usage_event_id, replayed=False)
