"""Balance statuses over HTTP and WebSocket: NO_ALLOCATION for a pool an End User never
received (no alert for it), and a balanceChanged event for every status change, a
threshold change included."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from gql import gql

from tests.applications import App, application, consume_input
from tests.graphql_client import ALLOCATE, CONSUME, PURCHASE, RELEASE, UPSERT, Caller
from tests.subscribing import ALERTS, SET_THRESHOLD, next_event, subscribed

STATUSES = """
query($id: ID!, $externalId: String, $status: [AllocationStatus!]) {
  application(id: $id) {
    endUser(externalId: $externalId) {
      balances { pool status }
      balance(pool: "ai") { allocated remaining status version }
    }
    endUsers(first: 50, filter: {pool: "ai", status: $status}) {
      totalCount edges { node { externalId } }
    }
    allocationSummary(pool: "ai") { exhausted low }
    alerts(first: 10) { totalCount }
  }
}"""


async def _statuses(caller: Caller, app: App, external_id: str, *status: str) -> dict[str, Any]:
    data = await caller(STATUSES, id=app.id, externalId=external_id, status=list(status))
    return data["application"]


def _names(listed: dict[str, Any]) -> list[str]:
    return sorted(edge["node"]["externalId"] for edge in listed["edges"])


async def _new_end_user(app: App, external_id: str) -> str:
    upserted = await app.admin(
        UPSERT, input={"applicationId": app.id, "endUsers": [{"externalId": external_id}]}
    )
    return upserted["upsertEndUsers"]["endUsers"][0]["id"]


async def test_a_pool_never_received_is_no_allocation_everywhere(server, http) -> None:
    app = await application(server, http, users=2, credits_each=5)
    fresh = await _new_end_user(app, "fresh")
    # A threshold makes every transition an alert candidate; the fresh End User gets its
    # own (which writes its balance row) and stays NO_ALLOCATION.
    default = {"applicationId": app.id, "pool": "ai", "threshold": 3, "endUserDefault": True}
    assert (await app.admin(SET_THRESHOLD, input=default))["setLowBalanceThreshold"]["errors"] == []
    own = {"applicationId": app.id, "pool": "ai", "threshold": 9, "endUser": {"id": fresh}}
    assert (await app.admin(SET_THRESHOLD, input=own))["setLowBalanceThreshold"]["errors"] == []

    seen = await _statuses(app.reader, app, "fresh", "NO_ALLOCATION")
    # every pool of the application, each never received
    assert {b["status"] for b in seen["endUser"]["balances"]} == {"NO_ALLOCATION"}
    assert seen["endUser"]["balance"]["status"] == "NO_ALLOCATION"
    assert _names(seen["endUsers"]) == ["fresh"] and seen["endUsers"]["totalCount"] == 1
    assert seen["allocationSummary"] == {"exhausted": 0, "low": 0}
    exhausted = await _statuses(app.reader, app, "fresh", "EXHAUSTED")
    assert exhausted["endUsers"]["totalCount"] == 0

    # The first message of a subscription (the snapshot) says the same.
    async with subscribed(
        server.graphql, app.reader.key, app=app.id, pool="ai", endUser=fresh
    ) as events:
        assert (await next_event(events))["status"] == "NO_ALLOCATION"

    # Allocated, it is OK; all given back, NO_ALLOCATION again, never EXHAUSTED; and
    # neither move writes an alert.
    move = {"applicationId": app.id, "endUser": {"id": fresh}, "pool": "ai", "credits": 2}
    bought = await app.admin(PURCHASE, input={"applicationId": app.id, "pool": "ai", "credits": 20})
    assert bought["purchaseCredits"]["errors"] == []
    allocated = (await app.admin(ALLOCATE, input={**move, "credits": 20}))["allocateCredits"]
    assert allocated["errors"] == [] and allocated["balance"]["status"] == "OK"
    released = (await app.admin(RELEASE, input={**move, "credits": 20}))["releaseCredits"]
    assert released["errors"] == []
    assert released["balance"] == {
        "pool": "ai",
        "allocated": 0,
        "used": 0,
        "remaining": 0,
        "status": "NO_ALLOCATION",
    }
    again = await _statuses(app.reader, app, "fresh", "NO_ALLOCATION")
    assert again["endUser"]["balance"]["status"] == "NO_ALLOCATION"
    assert _names(again["endUsers"]) == ["fresh"]
    assert again["alerts"]["totalCount"] == 0


BALANCE_EVENTS = gql(
    """
subscription($app: ID!, $pool: String, $endUser: ID) {
  balanceChanged(applicationId: $app, pool: $pool, endUserId: $endUser) {
    endUserId version cause at remaining status
  }
}"""
)


BALANCE = """
query($id: ID!, $endUser: ID) {
  application(id: $id) { endUser(id: $endUser) { balance(pool: "ai") { version status } } }
}"""


async def _set_threshold(app: App, **target: Any) -> None:
    done = await app.admin(SET_THRESHOLD, input={"applicationId": app.id, "pool": "ai", **target})
    assert done["setLowBalanceThreshold"]["errors"] == []


async def _events_until(events: Any, count: int) -> list[dict[str, Any]]:
    """The next `count` THRESHOLD events (allocations of the setup may still arrive)."""
    seen: list[dict[str, Any]] = []
    while len(seen) < count:
        event = await next_event(events)
        if event["cause"] == "THRESHOLD":
            seen.append(event)
    return seen


async def test_a_threshold_change_is_a_balance_event_with_a_higher_version(server, http) -> None:
    app = await application(server, http, users=3, credits_each=5)
    first, second, third = app.end_user_ids
    await app.admin(CONSUME, input=consume_input(app, {"id": first}, credits=3))  # first holds 2
    async with subscribed(
        server.graphql, app.reader.key, document=BALANCE_EVENTS, app=app.id, pool="ai"
    ) as events:
        snapshots = {None: await next_event(events)}  # the pool's
        for user in (first, second, third):
            snapshots[user] = await _balance(app, user)
        assert {snapshots[u]["status"] for u in (first, second, third)} == {"OK"}

        # An End User's own threshold: LOW, at the next version.
        await _set_threshold(app, threshold=2, endUser={"id": first})
        [low] = await _events_until(events, 1)
        assert (low["endUserId"], low["status"], low["remaining"]) == (first, "LOW", 2)
        assert low["version"] == snapshots[first]["version"] + 1

        # The pool default moves the End Users following it (not `first`, which has its
        # own): one event each.
        await _set_threshold(app, threshold=5, endUserDefault=True)
        moved = {e["endUserId"]: e for e in await _events_until(events, 2)}
        assert set(moved) == {second, third}
        for user in (second, third):
            assert moved[user]["status"] == "LOW"
            assert moved[user]["version"] == snapshots[user]["version"] + 1

        # Cleared: back to OK, at the next version again; an unchanged status sends nothing.
        await _set_threshold(app, threshold=None, endUserDefault=True)
        cleared = {e["endUserId"]: e for e in await _events_until(events, 2)}
        assert {e["status"] for e in cleared.values()} == {"OK"}
        assert cleared[second]["version"] == moved[second]["version"] + 1
        await _set_threshold(app, threshold=1, endUser={"id": second})  # 5 > 1: still OK
        await _set_threshold(app, threshold=3)  # the pool's own: 13 > 3, still OK
        with pytest.raises(TimeoutError):
            await next_event(events, wait=0.7)

        # The pool's own threshold moves the pool's status.
        await _set_threshold(app, threshold=20)
        [pool] = await _events_until(events, 1)
        assert (pool["endUserId"], pool["status"]) == (None, "LOW")
        assert pool["version"] == snapshots[None]["version"] + 1

    # A new subscriber's snapshot of those versions carries their own `at`.
    for user, latest in ((first, low), (third, cleared[third]), (None, pool)):
        async with subscribed(
            server.graphql,
            app.reader.key,
            document=BALANCE_EVENTS,
            app=app.id,
            pool="ai",
            endUser=user,
        ) as events:
            again = {user: await next_event(events)}
        assert again[user]["version"] == latest["version"]
        assert again[user]["status"] == latest["status"]
        assert _instant(again[user]["at"]) == _instant(latest["at"])
    alerts = (await app.reader(ALERTS, id=app.id))["application"]["alerts"]
    # LOW for first, LOW then RECOVERED for second and third, LOW for the pool
    assert sorted(e["node"]["kind"] for e in alerts["edges"]) == ["LOW"] * 4 + ["RECOVERED"] * 2


async def _balance(app: App, end_user_id: str) -> dict[str, Any]:
    found = await app.reader(BALANCE, id=app.id, endUser=end_user_id)
    return found["application"]["endUser"]["balance"]


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)
