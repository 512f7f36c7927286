"""balanceChanged over WebSocket with an existing client (gql, graphql-transport-ws)."""

from __future__ import annotations

import asyncio

import pytest
from gql import gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from tests.applications import App, application, consume_input
from tests.graphql_client import CONSUME, Caller
from tests.subscribing import ALERTS, SET_THRESHOLD, next_event, subscribed


async def test_an_end_user_subscription_gets_a_snapshot_then_each_change(server, http) -> None:
    app = await application(server, http, users=2, credits_each=10)
    user = app.end_user_ids[0]
    async with subscribed(
        server.graphql, app.reader.key, app=app.id, pool="ai", endUser=user
    ) as events:
        first = await next_event(events)
        assert (first["remaining"], first["used"], first["cause"]) == (10, 0, "ALLOCATE")
        assert first["endUser"] == {"externalId": "u0"}
        for expected_remaining in (9, 8, 7):
            payload = (await app.admin(CONSUME, input=consume_input(app, {"id": user})))[
                "consumeCredits"
            ]
            assert payload["errors"] == []
            event = await next_event(events)
            assert event["remaining"] == expected_remaining
            assert event["cause"] == "CONSUME" and event["endUserId"] == user
            assert event["version"] == payload["balance"]["version"] > first["version"]
        # Another End User's changes and refused consumptions send nothing here.
        await app.admin(CONSUME, input=consume_input(app, {"id": app.end_user_ids[1]}))
        refused = await app.admin(CONSUME, input=consume_input(app, {"id": user}, credits=50))
        assert refused["consumeCredits"]["errors"][0]["code"] == "INSUFFICIENT_CREDITS"
        with pytest.raises(TimeoutError):
            await next_event(events, wait=0.7)


async def test_an_application_subscription_sees_pool_and_end_user_events(server, http) -> None:
    app = await application(server, http, users=2, credits_each=10)
    async with subscribed(server.graphql, app.admin.key, app=app.id, pool="ai") as events:
        snapshot = await next_event(events)
        assert snapshot["endUserId"] is None and snapshot["remaining"] == 20
        await app.admin(CONSUME, input=consume_input(app, {"id": app.end_user_ids[1]}, credits=4))
        seen: list[dict] = []
        while len(seen) < 2:
            event = await next_event(events)
            # The setup's allocations may still be on their way (the relay publishes late
            # under load); they are real, older changes, and not what this test waits for.
            if event["cause"] == "CONSUME":
                seen.append(event)
        by_kind = {e["endUserId"] is None: e for e in seen}
        assert by_kind[True]["remaining"] == 16 and by_kind[True]["used"] == 4
        assert (
            by_kind[False]["remaining"] == 6 and by_kind[False]["endUserId"] == app.end_user_ids[1]
        )


async def test_the_legacy_graphql_ws_protocol_works_too(server, http) -> None:
    app = await application(server, http, users=1, credits_each=5)
    async with subscribed(
        server.graphql,
        app.reader.key,
        protocol=WebsocketsTransport.APOLLO_SUBPROTOCOL,
        app=app.id,
        endUser=app.end_user_ids[0],
    ) as events:
        assert (await next_event(events))["remaining"] == 5


async def test_subscriptions_never_cross_applications(server, http) -> None:
    mine = await application(server, http, users=1)
    theirs = await application(server, http, users=1)
    for variables in (
        {"app": theirs.id},
        {"app": mine.id, "endUser": theirs.end_user_ids[0]},
    ):
        async with subscribed(server.graphql, mine.reader.key, **variables) as events:
            with pytest.raises(TransportQueryError) as caught:
                await next_event(events)
            assert caught.value.errors[0]["extensions"]["code"] == "NOT_FOUND"


LOW_CREDIT_ALERTS = gql(
    """
subscription($app: ID!) {
  lowCreditAlerts(applicationId: $app) {
    id pool kind remaining threshold acknowledged endUser { externalId }
  }
}"""
)
ACKNOWLEDGE = """
mutation($id: ID!) { acknowledgeAlert(id: $id) { alert { acknowledged } errors { code } } }"""


async def test_low_credit_alerts_are_pushed_listed_and_acknowledged(server, http) -> None:
    app = await application(server, http, users=1, credits_each=5)
    from tests.graphql_client import PURCHASE

    await app.admin(PURCHASE, input={"applicationId": app.id, "pool": "ai", "credits": 100})
    threshold = {"applicationId": app.id, "pool": "ai", "threshold": 2, "endUserDefault": True}
    done = await app.admin(SET_THRESHOLD, input=threshold)
    assert done["setLowBalanceThreshold"]["pool"]["endUserLowBalanceThreshold"] == 2
    async with subscribed(
        server.graphql, app.reader.key, document=LOW_CREDIT_ALERTS, app=app.id
    ) as alerts:
        await asyncio.sleep(0.3)  # the subscription is registered
        for _ in range(5):
            await app.admin(CONSUME, input=consume_input(app, {"externalId": "u0"}))
        low = await next_event(alerts)
        exhausted = await next_event(alerts)
        assert (low["kind"], low["remaining"], low["threshold"]) == ("LOW", 2, 2)
        assert (exhausted["kind"], exhausted["remaining"]) == ("EXHAUSTED", 0)
        assert exhausted["endUser"] == {"externalId": "u0"}
        with pytest.raises(TimeoutError):
            await next_event(alerts, wait=0.5)
    listed = (await app.reader(ALERTS, id=app.id))["application"]["alerts"]
    assert listed["totalCount"] == 2
    assert [e["node"]["kind"] for e in listed["edges"]] == ["EXHAUSTED", "LOW"]
    alert_id = listed["edges"][0]["node"]["id"]
    refused = await app.reader(ACKNOWLEDGE, id=alert_id)
    assert refused["acknowledgeAlert"]["errors"] == [{"code": "FORBIDDEN"}]
    acknowledged = await app.admin(ACKNOWLEDGE, id=alert_id)
    assert acknowledged["acknowledgeAlert"]["alert"] == {"acknowledged": True}


async def test_a_bad_key_closes_the_socket(server) -> None:
    """Refused in connection_init with 4403, never acknowledged (plain websockets client,
    to read the close code)."""
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    url = server.graphql.replace("http", "ws", 1)
    for payload in ({"authorization": "Bearer ug_nope_nope"}, {"authorization": "junk"}, {}):
        async with connect(url, subprotocols=["graphql-transport-ws"]) as socket:
            await socket.send(json.dumps({"type": "connection_init", "payload": payload}))
            with pytest.raises(ConnectionClosed) as caught:
                message = await asyncio.wait_for(socket.recv(), 5)
                raise AssertionError(f"expected a close, got {message}")
            assert caught.value.rcvd is not None and caught.value.rcvd.code == 4403


__all__ = ["App", "Caller"]


async def test_the_relay_deletes_the_rows_it_published(backend, tenant, outbox_held) -> None:
    """Published outbox rows do not pile up: a row left is a row not yet published."""
    from models.ledger import purchase_credits
    from models.records import OutboxEvent
    from subscriptions.broker import InProcessBroker
    from subscriptions.relay import OutboxRelay

    app = tenant.application_id
    await purchase_credits(app, "ai", 5)
    assert await OutboxEvent.filter(application_id=app).exists()
    relay = OutboxRelay(InProcessBroker(), None)  # (the server's relay is held meanwhile)
    while await relay.publish_pending():  # publish everything still pending
        pass
    assert not await OutboxEvent.filter(application_id=app).exists()
