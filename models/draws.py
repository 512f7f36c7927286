"""What every ledger operation shares: input limits, draws from lots in FIFO order, the End
User balance row lock, and ledger entry rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.balances import (
    END_USER_BALANCE_COLUMNS,
    NEXT_END_USER_VERSION,
    EndUserBalanceSnapshot,
)
from models.errors import ValidationFailed
from models.records import LedgerEntryKind
from models.sql import Sql, values_list

MAX_CREDITS_PER_OPERATION = 1_000_000_000
MAX_FEATURE_LENGTH = 100
MAX_TEXT_LENGTH = 200

# Lots an End User can draw from now, first to expire first (never-expiring last).
LIVE_LOT = "(l.expires_at IS NULL OR l.expires_at > now())"
FIFO = "l.expires_at ASC NULLS LAST, l.purchased_at ASC, l.id ASC"


@dataclass(frozen=True, slots=True)
class Draw:
    """Credits taken from one lot (through one allocation, for End User draws)."""

    lot_id: int
    credits: int
    allocation_id: int | None = None


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


async def lock_end_user_balance(
    db: Sql, end_user_id: int, pool_id: int, assignments: str, condition: str, *args: Any
) -> EndUserBalanceSnapshot | None:
    row = await db.row(
        f"UPDATE end_user_balance SET {assignments}, {NEXT_END_USER_VERSION}"
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
        f" WHERE a.end_user_id = $1 AND a.pool_id = $2 AND a.remaining > 0 AND {LIVE_LOT}"
        f" ORDER BY {FIFO}",
        end_user_id,
        pool_id,
    )


async def ensure_end_user_balance(db: Sql, end_user_id: int, pool_id: int) -> None:
    """Creates the End User's (empty) balance row in the pool if it is not there yet."""
    await db.run(
        "INSERT INTO end_user_balance (end_user_id, pool_id, allocated, used, expired,"
        " remaining, status, version, updated_at) VALUES ($1, $2, 0, 0, 0, 0, 'NO_ALLOCATION', 0,"
        " now()) ON CONFLICT (end_user_id, pool_id) DO NOTHING",
        end_user_id,
        pool_id,
    )
