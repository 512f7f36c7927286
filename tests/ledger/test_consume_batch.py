"""consume_credits_batch: per-item results in one transaction, under concurrency."""

from __future__ import annotations

import asyncio
import random

import pytest

from models.consume_batch import Consumption, consume_credits_batch
from models.consumption_combiner import submit_consumptions
from models.errors import DomainError, ErrorCode
from models.ledger import ConsumeResult, consume_credits
from models.records import Alert, LedgerEntry, OutboxEvent
from models.references import EndUserRef
from models.verify import verify_ledger
from tests.ledger_helpers import balance_of, end_users_holding, pool_counters


def _codes(results: list) -> list[str]:
    return ["OK" if isinstance(r, ConsumeResult) else r.code.value for r in results]


async def test_each_item_succeeds_or_fails_alone(tenant, outbox_held) -> None:
    app = tenant.application_id
    users = await end_users_holding(app, count=3, credits_each=5)
    outbox_before = await OutboxEvent.filter(application_id=app, topic="balance").count()
    batch = [
        Consumption(EndUserRef(id=users[0]), "ai", 2, "ai_generation"),
        Consumption(EndUserRef(id=users[0]), "ai", 3, "ai_generation"),
        Consumption(EndUserRef(id=users[0]), "ai", 1, "ai_generation"),  # exhausted by now
        Consumption(EndUserRef(external_id="nobody"), "ai", 1, "ai_generation"),
        Consumption(EndUserRef(id=users[1]), "gold", 1, "ai_generation"),
        Consumption(EndUserRef(id=users[1]), "ai", 0, "ai_generation"),
        Consumption(EndUserRef(id=users[1]), "ai", 4, "ai_rewrite", idempotency_key="a"),
        Consumption(EndUserRef(id=users[2]), "ai", 1, "ai_rewrite", idempotency_key="a"),
        Consumption(EndUserRef(id=users[2]), "ai", 5, "inbox_preview"),
    ]
    results = await consume_credits_batch(app, batch)
    assert _codes(results) == [
        "OK", "OK", "INSUFFICIENT_CREDITS", "NOT_FOUND", "NOT_FOUND", "VALIDATION", "OK",
        "VALIDATION", "OK",
    ]  # fmt: skip
    assert [r.balance.remaining for r in results if isinstance(r, ConsumeResult)] == [3, 0, 1, 0]
    pool = await pool_counters(app)
    assert (pool.used, pool.end_user_remaining) == (14, 1)
    assert [(await balance_of(u, pool)).used for u in users] == [5, 4, 5]
    # four End User events and one pool event for the whole batch
    assert (
        await OutboxEvent.filter(application_id=app, topic="balance").count() == outbox_before + 5
    )
    # users 0 and 2 ran out; their first allocation was no recovery
    alerts = await Alert.filter(application_id=app).order_by("id")
    assert [(a.end_user_id, a.kind) for a in alerts] == [
        (users[0], "EXHAUSTED"),
        (users[2], "EXHAUSTED"),
    ]
    assert await verify_ledger() == []

    again = await consume_credits_batch(
        app, [Consumption(EndUserRef(id=users[1]), "ai", 4, "ai_rewrite", idempotency_key="a")]
    )
    assert isinstance(again[0], ConsumeResult) and again[0].replayed
    assert again[0].balance == results[6].balance
    conflict = await consume_credits_batch(
        app, [Consumption(EndUserRef(id=users[1]), "ai", 1, "ai_rewrite", idempotency_key="a")]
    )
    assert _codes(conflict) == ["IDEMPOTENCY_CONFLICT"]
    assert (await pool_counters(app)).used == 14


async def test_a_failed_item_leaves_its_key_free(tenant) -> None:
    app = tenant.application_id
    [user] = await end_users_holding(app, count=1, credits_each=2)
    item = Consumption(EndUserRef(id=user), "ai", 3, "ai_generation", idempotency_key="retry-me")
    assert _codes(await consume_credits_batch(app, [item])) == ["INSUFFICIENT_CREDITS"]
    from models.ledger import allocate_credits, purchase_credits

    await purchase_credits(app, "ai", 5)
    await allocate_credits(app, "ai", EndUserRef(id=user), 5)
    [result] = await consume_credits_batch(app, [item])
    assert isinstance(result, ConsumeResult) and not result.replayed


async def test_batches_racing_single_consumptions_never_overdraw(tenant) -> None:
    app = tenant.application_id
    users = await end_users_holding(app, count=10, credits_each=10)

    def batch() -> list[Consumption]:
        return [
            Consumption(EndUserRef(id=random.choice(users)), "ai", 1, "ai_generation")
            for _ in range(25)
        ]

    work = [consume_credits_batch(app, batch()) for _ in range(8)]
    work += [
        consume_credits(app, "ai", EndUserRef(id=random.choice(users)), 1, "ai_generation")
        for _ in range(60)
    ]
    random.shuffle(work)
    outcomes = await asyncio.gather(*work, return_exceptions=True)

    await _exactly_the_held_100_consumed(app, outcomes)


async def _exactly_the_held_100_consumed(app: int, outcomes: list) -> None:
    """Of 260 consumptions of 1 against 100 credits held: 100 succeeded, every other one
    refused as INSUFFICIENT_CREDITS, and the counters and ledger say 100."""
    succeeded = 0
    for outcome in outcomes:
        items = outcome if isinstance(outcome, list) else [outcome]
        for item in items:
            if isinstance(item, ConsumeResult):
                succeeded += 1
            else:
                assert isinstance(item, DomainError), item
                assert item.code == ErrorCode.INSUFFICIENT_CREDITS
    assert succeeded == 100
    pool = await pool_counters(app)
    assert (pool.used, pool.end_user_remaining) == (100, 0)
    assert await LedgerEntry.filter(application_id=app, kind="CONSUME").count() == 100
    assert await verify_ledger() == []


async def test_batch_size_is_bounded(tenant) -> None:
    with pytest.raises(DomainError) as caught:
        await consume_credits_batch(tenant.application_id, [])
    assert caught.value.code == ErrorCode.VALIDATION
    item = Consumption(EndUserRef(external_id="x"), "ai", 1, "f")
    with pytest.raises(DomainError):
        await consume_credits_batch(tenant.application_id, [item] * 1001)


@pytest.mark.parametrize("call", ["single", "batch"])
async def test_a_call_cancelled_while_queued_is_not_consumed(tenant, call: str) -> None:
    """A consumeCredits call, or a whole batch, whose caller went away while it waited for
    the transaction under way: none of it is consumed, and the combiner carries on."""
    app = tenant.application_id
    [user] = await end_users_holding(app, count=1, credits_each=100)
    ref = EndUserRef(id=user)
    first = asyncio.ensure_future(consume_credits(app, "ai", ref, 1, "ai_generation"))
    await asyncio.sleep(0)  # the first call's transaction is under way
    if call == "single":
        waiting = consume_credits(app, "ai", ref, 5, "ai_generation")
    else:
        waiting = submit_consumptions(app, [Consumption(ref, "ai", 5, "f") for _ in range(3)])
    queued = asyncio.ensure_future(waiting)
    await asyncio.sleep(0)
    queued.cancel()
    await first
    with pytest.raises(asyncio.CancelledError):
        await queued
    await consume_credits(app, "ai", ref, 1, "ai_generation")  # the combiner carries on
    assert (await balance_of(user, await pool_counters(app))).used == 2


async def test_callers_are_answered_when_a_drainer_is_cancelled(tenant) -> None:
    from models.consumption_combiner import _combiners

    app = tenant.application_id
    [user] = await end_users_holding(app, count=1, credits_each=10)
    calls = [
        asyncio.ensure_future(consume_credits(app, "ai", EndUserRef(id=user), 1, "f"))
        for _ in range(5)
    ]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    for drainer in list(_combiners[app].drainers):
        drainer.cancel()
    _, pending = await asyncio.wait(calls, timeout=10)
    assert not pending  # every caller got an answer: a result or a cancellation
    succeeded = [c for c in calls if not c.cancelled() and c.exception() is None]
    # A batch under way when its drainer was cancelled still committed and answered.
    assert (await balance_of(user, await pool_counters(app))).used == len(succeeded)
    assert await verify_ledger() == []


# ------------------------------------------- batches through the combiner (consumeCreditsBatch)


async def test_combined_batches_and_singles_never_overdraw_and_answer_in_order(tenant) -> None:
    """Batches submitted to the combiner (as consumeCreditsBatch does) racing single calls:
    exactly what was held is consumed, and each batch's results follow its own items."""
    app = tenant.application_id
    users = await end_users_holding(app, count=10, credits_each=10)
    batches = [
        [
            Consumption(EndUserRef(id=random.choice(users)), "ai", 1, "ai_generation")
            for _ in range(25)
        ]
        for _ in range(8)
    ]
    work = [submit_consumptions(app, batch) for batch in batches]
    work += [
        consume_credits(app, "ai", EndUserRef(id=random.choice(users)), 1, "ai_generation")
        for _ in range(60)
    ]
    outcomes = await asyncio.gather(*work, return_exceptions=True)

    for batch, results in zip(batches, outcomes[:8], strict=True):
        assert len(results) == len(batch)
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, ConsumeResult):
                assert result.balance.end_user_id == item.end_user.id
    await _exactly_the_held_100_consumed(app, outcomes)


async def test_combined_batches_sharing_keys_debit_once(tenant) -> None:
    """Ten concurrent batches with the same ten idempotency keys: each key debits once, the
    other nine answers are replays; a key reused with other arguments is a conflict."""
    app = tenant.application_id
    [user] = await end_users_holding(app, count=1, credits_each=100)

    def batch(credits: int) -> list[Consumption]:
        return [
            Consumption(EndUserRef(id=user), "ai", credits, "f", idempotency_key=f"k{i}")
            for i in range(10)
        ]

    outcomes = await asyncio.gather(*(submit_consumptions(app, batch(1)) for _ in range(10)))
    for i in range(10):
        answers = [results[i] for results in outcomes]
        assert all(isinstance(a, ConsumeResult) for a in answers), answers
        assert sorted(a.replayed for a in answers) == [False] + [True] * 9
    assert (await balance_of(user, await pool_counters(app))).used == 10
    conflicting = await submit_consumptions(app, batch(2))
    assert {r.code for r in conflicting} == {ErrorCode.IDEMPOTENCY_CONFLICT}
    assert (await balance_of(user, await pool_counters(app))).used == 10
    assert await verify_ledger() == []


async def test_combined_batches_past_the_batch_size_all_commit_whole(tenant) -> None:
    """Three batches of 400 at once (1,200 > MAX_BATCH): a transaction never splits one."""
    app = tenant.application_id
    users = await end_users_holding(app, count=20, credits_each=100)
    batches = [
        [Consumption(EndUserRef(id=users[i % 20]), "ai", 1, "f") for i in range(400)]
        for _ in range(3)
    ]
    outcomes = await asyncio.gather(*(submit_consumptions(app, b) for b in batches))
    assert all(isinstance(r, ConsumeResult) for results in outcomes for r in results)
    assert (await pool_counters(app)).used == 1_200
    with pytest.raises(DomainError) as caught:
        await submit_consumptions(app, [])
    assert caught.value.code == ErrorCode.VALIDATION
    with pytest.raises(DomainError):
        await submit_consumptions(app, batches[0] * 3)
    assert await verify_ledger() == []
