"""docs/ledger.md#rules 2 and 3 under many concurrent clients, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random

from models.errors import ErrorCode, IdempotencyConflict, InsufficientCredits
from models.expiry import expire_lots
from models.ledger import allocate_credits, consume_credits, purchase_credits
from models.records import LedgerEntry, OutboxEvent, UsageEvent
from models.references import EndUserRef
from models.verify import verify_ledger
from tests.ledger_helpers import balance_of, end_users_holding, pool_counters


async def test_200_concurrent_consumptions_exactly_100_succeed(tenant) -> None:
    app = tenant.application_id
    users = await end_users_holding(app, count=10, credits_each=10)
    targets = [users[i % 10] for i in range(200)]
    random.shuffle(targets)

    results = await asyncio.gather(
        *(consume_credits(app, "ai", EndUserRef(id=u), 1, "ai_generation") for u in targets),
        return_exceptions=True,
    )

    succeeded = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(succeeded) == 100
    assert len(failed) == 100
    assert all(isinstance(f, InsufficientCredits) for f in failed), failed[:3]
    assert {f.code for f in failed} == {ErrorCode.INSUFFICIENT_CREDITS}
    pool = await pool_counters(app)
    assert (pool.purchased, pool.allocated, pool.used, pool.remaining) == (100, 100, 100, 0)
    assert pool.end_user_remaining == 0
    for user in users:
        balance = await balance_of(user, pool)
        assert (balance.allocated, balance.used, balance.remaining) == (10, 10, 0)
        assert balance.status == "EXHAUSTED"
    assert await UsageEvent.filter(application_id=app).count() == 100
    assert await verify_ledger() == []


async def test_50_concurrent_calls_with_one_idempotency_key_debit_once(tenant, outbox_held) -> None:
    app = tenant.application_id
    [user] = await end_users_holding(app, count=1, credits_each=100)
    outbox_before = await OutboxEvent.filter(application_id=app, topic="balance").count()

    results = await asyncio.gather(
        *(
            consume_credits(
                app, "ai", EndUserRef(id=user), 3, "ai_rewrite", idempotency_key="order-42"
            )
            for _ in range(50)
        )
    )

    assert sum(not r.replayed for r in results) == 1
    assert sum(r.replayed for r in results) == 49
    original = next(r for r in results if not r.replayed)
    assert all(r.balance == original.balance for r in results)
    assert {r.usage_event_id for r in results} == {original.usage_event_id}
    pool = await pool_counters(app)
    assert (await balance_of(user, pool)).used == 3
    assert await LedgerEntry.filter(application_id=app, kind="CONSUME").count() == 1
    # One consumption: one End User event and one pool event, nothing for the replays.
    assert (
        await OutboxEvent.filter(application_id=app, topic="balance").count() == outbox_before + 2
    )

    for other in (
        {"credits": 4, "feature": "ai_rewrite"},
        {"credits": 3, "feature": "inbox_preview"},
    ):
        try:
            await consume_credits(
                app, "ai", EndUserRef(id=user), idempotency_key="order-42", **other
            )
        except IdempotencyConflict as exc:
            assert exc.code == ErrorCode.IDEMPOTENCY_CONFLICT
        else:
            raise AssertionError("the same key with other arguments must conflict")
    assert (await balance_of(user, pool)).used == 3


async def test_idempotency_keys_are_scoped_per_application(tenant, backend) -> None:
    from models.accounts import create_application

    other = await create_application(tenant.organization_id, "other app")
    for app in (tenant.application_id, other.id):
        [user] = await end_users_holding(app, count=1, credits_each=5)
        result = await consume_credits(
            app, "ai", EndUserRef(id=user), 1, "ai_generation", idempotency_key="shared-key"
        )
        assert not result.replayed


async def test_allocations_racing_consumptions_and_a_sweep_lose_nothing(tenant) -> None:
    app = tenant.application_id
    [user] = await end_users_holding(app, count=1, credits_each=50)
    await purchase_credits(app, "ai", 1_000)

    allocations = [allocate_credits(app, "ai", EndUserRef(id=user), 5) for _ in range(100)]
    consumptions = [
        consume_credits(app, "ai", EndUserRef(id=user), 4, "ai_generation") for _ in range(120)
    ]
    work = allocations + consumptions + [expire_lots(), expire_lots()]
    random.shuffle(work)
    results = await asyncio.gather(*work, return_exceptions=True)

    unexpected = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, InsufficientCredits)
    ]
    assert unexpected == []
    allocated_ok = sum(1 for r, c in zip(results, work, strict=True) if c in allocations and _ok(r))
    consumed_ok = sum(1 for r, c in zip(results, work, strict=True) if c in consumptions and _ok(r))
    assert allocated_ok == 100  # the pool always had enough unallocated credits
    pool = await pool_counters(app)
    balance = await balance_of(user, pool)
    assert balance.allocated == 50 + 5 * allocated_ok
    assert balance.used == 4 * consumed_ok
    assert balance.remaining == balance.allocated - balance.used - balance.expired
    assert pool.used == balance.used
    assert pool.end_user_remaining == balance.remaining
    assert pool.purchased == pool.used + pool.expired + pool.end_user_remaining + pool.unallocated
    assert await verify_ledger() == []


def _ok(result: object) -> bool:
    return not isinstance(result, BaseException)
