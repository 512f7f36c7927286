"""docs/ledger.md#rules 4 and 5: expiry by the database clock, one sweep's worth of EXPIRE
entries however many sweepers run, FIFO by expiry across lots."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from api.jobs import expiry_warner
from api.settings import Settings
from models.credits import Allocation, CreditPack
from models.end_users import EndUserInput, upsert_end_users
from models.errors import InsufficientCredits
from models.expiry import expire_lots
from models.ledger import allocate_credits, consume_credits, purchase_credits, release_credits
from models.records import LedgerEntry, OutboxEvent
from models.references import EndUserRef
from models.verify import verify_ledger
from models.webhook_events import outbox_webhook_event
from tests.ledger_helpers import balance_of, move_expiry_to_past, pool_counters


async def _user(app: int, external_id: str = "alice") -> EndUserRef:
    await upsert_end_users(app, [EndUserInput(external_id)])
    return EndUserRef(external_id=external_id)


async def test_a_lot_past_its_expiry_is_neither_consumed_nor_allocated_before_the_sweep(
    tenant,
) -> None:
    app = tenant.application_id
    alice = await _user(app)
    soon = datetime.now(UTC) + timedelta(seconds=1.2)
    await purchase_credits(app, "ai", 100, expires_at=soon)
    await allocate_credits(app, "ai", alice, 40)
    await asyncio.sleep(1.3)  # the database clock passes expires_at; no sweep has run

    with pytest.raises(InsufficientCredits):
        await consume_credits(app, "ai", alice, 1, "ai_generation")
    with pytest.raises(InsufficientCredits):
        await allocate_credits(app, "ai", alice, 1)
    with pytest.raises(InsufficientCredits):
        await release_credits(app, "ai", alice, 1)
    pool = await pool_counters(app)
    assert (pool.used, pool.expired, pool.allocated) == (0, 0, 40)  # not booked yet

    swept = await expire_lots()
    assert swept.credits >= 100
    pool = await pool_counters(app)
    assert (pool.expired, pool.remaining, pool.unallocated) == (100, 0, 0)
    balance = await balance_of((await Allocation.filter(pool_id=pool.id).first()).end_user_id, pool)
    assert (balance.allocated, balance.expired, balance.remaining) == (40, 40, 0)
    assert await verify_ledger() == []


async def test_four_sweeps_at_once_write_each_expire_entry_exactly_once(tenant) -> None:
    app = tenant.application_id
    users = [await _user(app, f"user-{i}") for i in range(5)]
    packs = []
    for credits in (100, 60, 30):
        result = await purchase_credits(
            app, "ai", credits, expires_at=datetime.now(UTC) + timedelta(days=1)
        )
        packs.append(result.pack_id)
    for user in users:
        await allocate_credits(app, "ai", user, 25)  # 125 of 190 allocated
    await consume_credits(app, "ai", users[0], 5, "ai_generation")
    for pack_id in packs:
        await move_expiry_to_past(pack_id)

    results = await asyncio.gather(*(expire_lots() for _ in range(4)))

    assert sum(r.credits for r in results) == 190 - 5
    assert sum(r.lots for r in results) == 3
    entries = await LedgerEntry.filter(application_id=app, kind="EXPIRE")
    # FIFO put users 0-3 on lot a (user 0 then used 5 of it) and user 4 on lot b.
    a, b, c = packs
    ids = {ref.external_id: u.id for ref in users for u in await _ids(app, ref)}
    expected = {
        (a, ids["user-0"], -20),
        (a, ids["user-1"], -25),
        (a, ids["user-2"], -25),
        (a, ids["user-3"], -25),
        (b, ids["user-4"], -25),
        (b, None, -35),
        (c, None, -30),
    }
    written = Counter((e.lot_id, e.end_user_id, e.amount) for e in entries)
    assert written == Counter(expected)  # each entry once, no more
    assert (await expire_lots()).lots == 0  # nothing left to sweep
    pool = await pool_counters(app)
    assert (pool.expired, pool.remaining, pool.end_user_remaining) == (185, 0, 0)
    assert await verify_ledger() == []


async def _ids(app: int, ref: EndUserRef) -> list:
    from models.credits import EndUser

    return await EndUser.filter(application_id=app, external_id=ref.external_id)


async def test_fifo_by_expiry_across_lots(tenant) -> None:
    app = tenant.application_id
    alice = await _user(app)
    now = datetime.now(UTC)
    never = (await purchase_credits(app, "ai", 10)).pack_id
    late = (await purchase_credits(app, "ai", 10, expires_at=now + timedelta(days=30))).pack_id
    early = (await purchase_credits(app, "ai", 10, expires_at=now + timedelta(days=2))).pack_id
    early_too = (await purchase_credits(app, "ai", 10, expires_at=now + timedelta(days=2))).pack_id

    await allocate_credits(app, "ai", alice, 25)  # early (10), early_too (10), late (5)
    held = {
        a.lot_id: a.remaining
        for a in await Allocation.filter(lot_id__in=[never, late, early, early_too])
    }
    assert held == {early: 10, early_too: 10, late: 5}

    await consume_credits(app, "ai", alice, 12, "ai_generation")  # early 10, early_too 2
    used = {p.id: p.used for p in await CreditPack.filter(id__in=[never, late, early, early_too])}
    assert used == {never: 0, late: 0, early: 10, early_too: 2}

    await release_credits(app, "ai", alice, 9)  # early_too 8, late 1
    held = {
        a.lot_id: a.remaining for a in await Allocation.filter(lot_id__in=[late, early, early_too])
    }
    assert held == {early: 0, early_too: 0, late: 4}
    unallocated = {
        p.id: p.unallocated for p in await CreditPack.filter(id__in=[never, late, early_too])
    }
    assert unallocated == {never: 10, late: 6, early_too: 8}

    await allocate_credits(app, "ai", alice, 10)  # early_too's 8 first, then late 2
    await move_expiry_to_past(early_too)
    with pytest.raises(InsufficientCredits):
        await consume_credits(app, "ai", alice, 7, "ai_generation")  # only late's 6 are live
    await consume_credits(app, "ai", alice, 6, "ai_generation")
    await expire_lots()
    pool = await pool_counters(app)
    balance = await balance_of((await Allocation.filter(lot_id=late).first()).end_user_id, pool)
    assert (balance.remaining, balance.expired) == (0, 8)
    assert await verify_ledger() == []


async def test_credits_expiring_soon_are_announced_once_by_concurrent_warners(
    tenant, outbox_held
) -> None:
    """One event per lot's pool remainder and per holder, for lots expiring within the
    window that still hold credits; none for a lot empty, already expired, or later."""
    app = tenant.application_id
    alice, bob = await _user(app, "alice"), await _user(app, "bob")
    now = datetime.now(UTC)
    empty = await purchase_credits(app, "inbox_preview", 10, expires_at=now + timedelta(days=2))
    await allocate_credits(app, "inbox_preview", alice, 10)
    await consume_credits(app, "inbox_preview", alice, 10, "ai_generation")
    expired = (await purchase_credits(app, "ai", 30, expires_at=now + timedelta(days=1))).pack_id
    await move_expiry_to_past(expired)
    soon = await purchase_credits(app, "ai", 100, expires_at=now + timedelta(days=3))
    later = await purchase_credits(app, "ai", 50, expires_at=now + timedelta(days=10))
    await allocate_credits(app, "ai", alice, 25)  # from the lot expiring first
    await allocate_credits(app, "ai", bob, 20)
    await consume_credits(app, "ai", bob, 5, "ai_generation")

    warner = expiry_warner(Settings().model_copy(update={"expiry_warning_days": 7}))
    await asyncio.gather(warner(), warner())
    await asyncio.gather(warner(), warner())  # announced already: nothing more

    rows = await OutboxEvent.filter(application_id=app, topic="credits_expiring").order_by("id")
    announced = [outbox_webhook_event({"topic": r.topic, "payload": r.payload}) for r in rows]
    ids = {ref.external_id: u.id for ref in (alice, bob) for u in await _ids(app, ref)}
    assert [(e.end_user_id, e.data["packId"], e.data["remaining"]) for e in announced] == [
        (None, str(soon.pack_id), 95),
        (ids["alice"], str(soon.pack_id), 25),
        (ids["bob"], str(soon.pack_id), 15),
    ]
    pool_event = announced[0]
    assert pool_event.type == "credits.expiring" and pool_event.data["pool"] == "ai"
    assert pool_event.data["unallocated"] == 55 and "unallocated" not in announced[1].data
    pack = await CreditPack.get(id=soon.pack_id)
    assert datetime.fromisoformat(pool_event.data["expiresAt"]) == pack.expires_at
    warned = await CreditPack.filter(pool__application_id=app, expiry_warned_at__isnull=False)
    assert {p.id for p in warned} == {soon.pack_id, empty.pack_id}  # the empty one: claimed
    assert later.pack_id not in {p.id for p in warned} and expired not in {p.id for p in warned}
