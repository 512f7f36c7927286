"""Shared set-up for ledger tests: End Users with allocations, counters read back."""

from __future__ import annotations

from tortoise import Tortoise

from models.credits import CreditPack, CreditPool, EndUserBalance
from models.end_users import EndUserInput, upsert_end_users
from models.ledger import allocate_credits, purchase_credits
from models.references import EndUserRef


async def end_users_holding(
    application_id: int, count: int, credits_each: int, pool: str = "ai"
) -> list[int]:
    """`count` End Users, each allocated `credits_each` from one fresh purchase."""
    users = await upsert_end_users(
        application_id, [EndUserInput(f"user-{i}", name=f"User {i}") for i in range(count)]
    )
    await purchase_credits(application_id, pool, count * credits_each)
    for user in users:
        await allocate_credits(application_id, pool, EndUserRef(id=user.id), credits_each)
    return [user.id for user in users]


async def pool_counters(application_id: int, key: str = "ai") -> CreditPool:
    return await CreditPool.get(application_id=application_id, key=key)


async def balance_of(end_user_id: int, pool: CreditPool) -> EndUserBalance:
    return await EndUserBalance.get(end_user_id=end_user_id, pool_id=pool.id)


async def move_expiry_to_past(pack_id: int) -> None:
    """Test-only: a lot whose expiry has passed, without waiting for it."""
    conn = Tortoise.get_connection("default")
    await conn.execute_query(
        f"UPDATE credit_pack SET expires_at = '2000-01-01 00:00:00+00:00' WHERE id = {int(pack_id)}"
    )


async def ledger_count(application_id: int, kind: str) -> int:
    from models.records import LedgerEntry

    return await LedgerEntry.filter(application_id=application_id, kind=kind).count()


__all__ = ["CreditPack"]
