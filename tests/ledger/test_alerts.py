"""Low-credit alerts (docs/balances.md#statuses): written exactly on status changes, in the ledger
transaction."""

from __future__ import annotations

import pytest

from models.alerts import acknowledge_alert, set_low_balance_threshold
from models.credits import EndUserBalance
from models.errors import DomainError, ErrorCode
from models.ledger import allocate_credits, consume_credits, purchase_credits
from models.records import Alert, OutboxEvent
from models.references import EndUserRef
from models.sql import loads
from models.verify import verify_ledger
from tests.ledger_helpers import end_users_holding, pool_counters


async def _alerts(app: int) -> list[tuple[int | None, str, int]]:
    return [
        (a.end_user_id, a.kind, a.remaining)
        for a in await Alert.filter(application_id=app).order_by("id")
    ]


async def test_ok_low_exhausted_then_recovered(tenant, outbox_held) -> None:
    app = tenant.application_id
    [user] = await end_users_holding(app, count=1, credits_each=10)
    ref = EndUserRef(id=user)
    await purchase_credits(app, "ai", 1000)  # the pool itself stays far from empty
    await set_low_balance_threshold(app, "ai", 3, end_user=ref)
    assert await _alerts(app) == []
    for credits in (6, 1, 1, 1):  # 4 (OK), 3 (LOW), 2 and 1 (still LOW)
        await consume_credits(app, "ai", ref, credits, "ai_generation")
    assert await _alerts(app) == [(user, "LOW", 3)]
    await consume_credits(app, "ai", ref, 1, "ai_generation")
    assert await _alerts(app) == [(user, "LOW", 3), (user, "EXHAUSTED", 0)]
    await allocate_credits(app, "ai", ref, 20)
    assert await _alerts(app) == [(user, "LOW", 3), (user, "EXHAUSTED", 0), (user, "RECOVERED", 20)]
    alert_events = await OutboxEvent.filter(application_id=app, topic="alert").count()
    assert alert_events == 3
    assert await verify_ledger() == []


async def test_pool_threshold_and_the_default_end_user_threshold(tenant) -> None:
    app = tenant.application_id
    users = await end_users_holding(app, count=3, credits_each=10)
    await purchase_credits(app, "ai", 70)  # pool remaining 100
    await set_low_balance_threshold(app, "ai", 95)
    assert await _alerts(app) == []  # 100 > 95: still OK
    await consume_credits(app, "ai", EndUserRef(id=users[0]), 6, "ai_generation")
    assert await _alerts(app) == [(None, "LOW", 94)]

    # Lowering the default puts the End Users at or under it to LOW, each with one alert.
    await set_low_balance_threshold(app, "ai", 4, end_user_default=True)
    assert await _alerts(app) == [(None, "LOW", 94), (users[0], "LOW", 4)]
    await set_low_balance_threshold(app, "ai", 10, end_user_default=True)
    assert sorted((await _alerts(app))[2:], key=str) == sorted(
        [(users[1], "LOW", 10), (users[2], "LOW", 10)], key=str
    )
    pool = await pool_counters(app)
    statuses = {b.end_user_id: b.status for b in await EndUserBalance.filter(pool_id=pool.id)}
    assert statuses == {users[0]: "LOW", users[1]: "LOW", users[2]: "LOW"}
    # An End User's own threshold overrides the default.
    await set_low_balance_threshold(app, "ai", 2, end_user=EndUserRef(id=users[1]))
    assert (await _alerts(app))[-1] == (users[1], "RECOVERED", 10)


async def test_bad_thresholds_and_acknowledgement(tenant) -> None:
    app = tenant.application_id
    [user] = await end_users_holding(app, count=1, credits_each=2)
    for bad in (-1, 2**31, True):
        with pytest.raises(DomainError) as caught:
            await set_low_balance_threshold(app, "ai", bad)
        assert caught.value.code == ErrorCode.VALIDATION
    with pytest.raises(DomainError) as caught:
        await set_low_balance_threshold(app, "gold", 1)
    assert caught.value.code == ErrorCode.NOT_FOUND
    await consume_credits(app, "ai", EndUserRef(id=user), 2, "ai_generation")
    [alert] = await Alert.filter(application_id=app, end_user_id=user)
    acknowledged = await acknowledge_alert(app, alert.id)
    assert acknowledged.acknowledged_at is not None
    with pytest.raises(DomainError) as caught:
        await acknowledge_alert(app + 1, alert.id)  # another application's id: not found
    assert caught.value.code == ErrorCode.NOT_FOUND


async def test_a_default_threshold_moves_each_end_user_in_bounded_statements(
    tenant, outbox_held, monkeypatch
) -> None:
    """Every End User whose status the pool default moves gets its event (cause THRESHOLD,
    next version) and its alert in the same transaction, a bounded number of rows per
    statement (here 2, so that 5 End Users take several)."""
    import models.outbox

    monkeypatch.setattr(models.outbox, "ROWS_PER_STATEMENT", 2)
    app = tenant.application_id
    users = await end_users_holding(app, count=5, credits_each=10)
    pool = await pool_counters(app)
    before = {b.end_user_id: b.version for b in await EndUserBalance.filter(pool_id=pool.id)}
    await OutboxEvent.filter(application_id=app).delete()
    await set_low_balance_threshold(app, "ai", 10, end_user_default=True)
    events = [
        loads(e.payload)
        for e in await OutboxEvent.filter(application_id=app, topic="balance").order_by("id")
    ]
    assert sorted(e["end_user_id"] for e in events) == sorted(users)
    for event in events:
        assert (event["cause"], event["status"]) == ("THRESHOLD", "LOW")
        assert event["version"] == before[event["end_user_id"]] + 1
    alerts = await Alert.filter(application_id=app).order_by("id")
    assert sorted(a.end_user_id for a in alerts) == sorted(users)
    pushed = [
        loads(e.payload)
        for e in await OutboxEvent.filter(application_id=app, topic="alert").order_by("id")
    ]
    assert [(p["id"], p["end_user_id"]) for p in pushed] == [(a.id, a.end_user_id) for a in alerts]
