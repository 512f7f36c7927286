"""`models.clock.booked_at`: operations run as at a past moment are written as they would
have been then, by the same rules (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.billing import as_utc
from models.clock import booked_at, now
from models.credits import CreditPack
from models.end_users import EndUserInput, upsert_end_users
from models.errors import InsufficientCredits
from models.expiry import expire_lots
from models.ledger import allocate_credits, consume_credits, purchase_credits
from models.records import LedgerEntry
from models.references import EndUserRef
from models.rollups import rebuild_rollups
from models.verify import verify_ledger


def test_a_booking_time_is_aware_and_past() -> None:
    with pytest.raises(ValueError, match="time zone"), booked_at(datetime(2026, 1, 1)):
        pass
    with pytest.raises(ValueError, match="past"), booked_at(now() + timedelta(minutes=1)):
        pass
    moment = datetime.now(UTC) - timedelta(days=3)
    with booked_at(moment):
        assert now() == moment
    assert now() > moment


async def test_history_is_booked_at_its_moments_by_the_ledgers_rules(tenant) -> None:
    app = tenant.application_id
    today = datetime.now(UTC).replace(microsecond=0)  # SQLite keeps milliseconds
    bought, used = today - timedelta(days=40), today - timedelta(days=35)
    with booked_at(bought - timedelta(minutes=1)):
        await upsert_end_users(app, [EndUserInput("alice")])
    alice = EndUserRef(external_id="alice")
    with booked_at(bought):
        # a lot that expired 20 days ago was live when it was bought
        purchase = await purchase_credits(app, "ai", 100, expires_at=bought + timedelta(days=20))
        await allocate_credits(app, "ai", alice, 60)
    with booked_at(used):
        await consume_credits(app, "ai", alice, 25, "ai_generation")  # not combined: alone
        with pytest.raises(InsufficientCredits):  # no overdraw, then as now
            await consume_credits(app, "ai", alice, 36, "ai_generation")
    entries = await LedgerEntry.filter(application_id=app).order_by("id")
    booked = [(entry.kind, as_utc(entry.created_at)) for entry in entries]
    assert [kind for kind, _ in booked] == ["PURCHASE", "ALLOCATE", "CONSUME"]
    assert [moment for _, moment in booked] == [bought, bought, used]
    assert as_utc(entries[2].occurred_at) == used
    pack = await CreditPack.get(id=purchase.pack_id)
    assert as_utc(pack.purchased_at) == bought
    # on the real clock the lot has expired: the sweep books what was left, once
    assert (await expire_lots()).credits == 75
    with pytest.raises(InsufficientCredits):
        await consume_credits(app, "ai", alice, 1, "ai_generation")
    await rebuild_rollups()  # history booked behind a fold that passed it (another test's)
    assert await verify_ledger() == []
