"""Subscriptions rendered once per selection (api/transport/, subscriptions/fanout.py):
subscribers of one (document, operation, shaping variables) share each rendering, whatever
their topic filters, protocol or credential; other selections are rendered apart and right;
a slow subscriber is conflated and holds nobody up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from models.events import LiveEvent
from subscriptions.broker import InProcessBroker, application_channel
from subscriptions.fanout import Fanout, Selection, Topic
from subscriptions.rendering import shaping_variables
from subscriptions.streams import MAX_PENDING_KEYS
from tests.applications import application, consume_input
from tests.graphql_client import CONSUME, ISSUE
from tests.live_events import balance_event
from tests.subscribing import LEGACY_WS, TRANSPORT_WS, frame, settled, subscriber

REMAINING = """
subscription($app: ID!, $pool: String, $endUser: ID) {
  balanceChanged(applicationId: $app, pool: $pool, endUserId: $endUser) { remaining version }
}"""
WHO = """
subscription Who($app: ID!, $endUser: ID, $who: Boolean!) {
  balanceChanged(applicationId: $app, endUserId: $endUser) {
    remaining endUser @include(if: $who) { externalId }
  }
}"""


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def drained(ws: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        while True:
            await frame(ws, wait=0.2)


def data(text: str) -> dict:
    message = json.loads(text)
    assert message["id"] == "7" and "errors" not in message["payload"], message
    return message["payload"]["data"]["balanceChanged"]


async def test_subscribers_of_one_selection_share_each_rendering(server, http) -> None:
    app = await application(server, http, users=2, credits_each=10)
    u0, u1 = app.end_user_ids
    token = (await app.reader(ISSUE, input={"applicationId": app.id, "endUser": {"id": u0}}))[
        "issueEndUserToken"
    ]["token"]
    async with AsyncExitStack() as stack:
        # One selection, reached through other topic filters, credentials and protocols.
        variants = [
            (app.reader.key, TRANSPORT_WS, {"endUser": u0}),
            (app.reader.key, TRANSPORT_WS, {"endUser": u0, "pool": "ai"}),
            (app.admin.key, LEGACY_WS, {"endUser": u0}),
            (token, TRANSPORT_WS, {}),  # the token's End User
            (token, LEGACY_WS, {"pool": "ai"}),
        ] * 2
        watchers = [
            await stack.enter_async_context(
                subscriber(server, key, REMAINING, protocol, app=app.id, **variables)
            )
            for key, protocol, variables in variants
        ]
        others = [
            await stack.enter_async_context(
                subscriber(server, app.reader.key, REMAINING, app=app.id, endUser=u1)
            )
            for _ in range(3)
        ]
        for ws in watchers + others:
            assert data(await frame(ws))["remaining"] == 10  # the snapshot, first
        await settled(server, int(app.id))
        for ws in watchers + others:
            await drained(ws)  # the other pool's snapshot, for those watching every pool
        before = server.realtime.fanout.renderings(int(app.id))

        consumed = await app.admin(CONSUME, input=consume_input(app, {"id": u0}, credits=3))
        version = consumed["consumeCredits"]["balance"]["version"]
        frames = [await frame(ws) for ws in watchers]
        assert {data(text)["version"] for text in frames} == {version}
        assert data(frames[0]) == {"remaining": 7, "version": version}
        # One rendering (the pool's own event has no subscriber here); the payload text is
        # the same in both protocols' frames.
        assert server.realtime.fanout.renderings(int(app.id)) == before + 1
        payloads = {json.dumps(json.loads(text)["payload"]) for text in frames}
        assert len(payloads) == 1
        for ws in others:
            with pytest.raises(TimeoutError):
                await frame(ws, wait=0.3)


async def test_different_selections_are_rendered_apart_and_right(server, http) -> None:
    app = await application(server, http, users=1, credits_each=10)
    [u0] = app.end_user_ids
    async with AsyncExitStack() as stack:
        plain, named, anonymous = [
            await stack.enter_async_context(subscriber(server, app.reader.key, document, **v))
            for document, v in (
                (REMAINING, {"app": app.id, "endUser": u0}),
                (WHO, {"app": app.id, "endUser": u0, "who": True}),
                (WHO, {"app": app.id, "endUser": u0, "who": False}),  # a shaping variable
            )
        ]
        await settled(server, int(app.id))
        for ws in (plain, named, anonymous):
            await drained(ws)  # the snapshots
        before = server.realtime.fanout.renderings(int(app.id))
        await app.admin(CONSUME, input=consume_input(app, {"id": u0}, credits=2))
        assert data(await frame(plain))["remaining"] == 8
        assert data(await frame(named)) == {"remaining": 8, "endUser": {"externalId": "u0"}}
        assert data(await frame(anonymous)) == {"remaining": 8}
        assert server.realtime.fanout.renderings(int(app.id)) == before + 3


async def test_an_application_subscriber_gets_pool_and_end_user_renderings(server, http) -> None:
    app = await application(server, http, users=2, credits_each=10)
    async with subscriber(server, app.reader.key, REMAINING, LEGACY_WS, app=app.id) as ws:
        assert data(await frame(ws))["remaining"] == 20  # the pool's snapshot
        await settled(server, int(app.id))
        await drained(ws)
        await app.admin(CONSUME, input=consume_input(app, {"id": app.end_user_ids[1]}, credits=4))
        remaining = sorted([data(await frame(ws))["remaining"] for _ in range(2)])
        assert remaining == [6, 16]  # the End User's balance and the pool's


async def test_without_a_live_feed_strawberry_executes_each_event(backend, server, http) -> None:
    """Another transport (no LiveClaim root value): the resolver yields the events itself."""
    from api.auth import authenticate
    from resolvers.context import Context
    from resolvers.schema import schema

    app = await application(server, http, users=1, credits_each=10)
    principal = await authenticate(f"Bearer {app.reader.key}", backend.settings.secret)
    context = Context(request=None, response=None, principal=principal, realtime=server.realtime)
    variables = {"app": app.id, "endUser": app.end_user_ids[0], "pool": "ai"}
    stream = await schema.subscribe(REMAINING, variable_values=variables, context_value=context)
    try:
        first = await asyncio.wait_for(anext(stream), 5)
        assert first.data == {"balanceChanged": {"remaining": 10, "version": 1}}
        await settled(server, int(app.id))
        await app.admin(CONSUME, input=consume_input(app, {"id": app.end_user_ids[0]}, credits=4))
        event = await asyncio.wait_for(anext(stream), 5)
        assert event.data["balanceChanged"]["remaining"] == 6
    finally:
        await stream.aclose()


def test_only_the_variables_outside_the_topic_arguments_shape_the_result() -> None:
    assert shaping_variables(REMAINING, None) == ()
    assert shaping_variables(WHO, "Who") == ("who",)
    both = """subscription($app: ID!, $e: ID) {
      balanceChanged(applicationId: $app, endUserId: $e) { endUser { balance(pool: $e) { used } } }
    }"""
    assert shaping_variables(both, None) == ("e",)
    via_fragment = """subscription($app: ID!, $who: Boolean!) {
      balanceChanged(applicationId: $app) { ...F } }
    fragment F on BalanceEvent { endUser @skip(if: $who) { id } }"""
    assert shaping_variables(via_fragment, None) == ("who",)


# ---------------------------------------------------------------- the fan-out on its own


def _envelope(end_user: int | None, version: int, pool_id: int = 1) -> bytes:
    event = balance_event(end_user, version, pool_id).to_json()
    return json.dumps({"topic": "balance", "outbox_id": 0, "event": event}).encode()


async def _no_snapshots(_: Topic) -> list[LiveEvent]:
    return []


async def test_a_slow_subscriber_is_conflated_and_holds_nobody_up() -> None:
    broker = InProcessBroker()
    fanout = Fanout(broker, _no_snapshots)
    rendered: list[tuple[int | None, int]] = []

    async def render(event: LiveEvent) -> str:
        rendered.append((event.end_user_id, event.version))
        return f"{event.end_user_id}@{event.version}"

    balances, versions = MAX_PENDING_KEYS + 500, 3
    channel = application_channel(1)
    slow = await fanout.join(Topic(1), Selection("doc", lambda: render))
    fast = await fanout.join(Topic(1), Selection("doc", lambda: render))
    try:
        received: list[str] = []

        async def read_fast() -> None:
            while len(received) < balances * versions:
                received.extend(await fast.take())

        reader = asyncio.create_task(read_fast())
        for version in range(1, versions + 1):
            for end_user in range(balances):
                await broker.publish(channel, _envelope(end_user, version))
                await asyncio.sleep(0)  # the dispatcher and the fast reader keep up
        await asyncio.wait_for(reader, 5)
        # The fast subscriber saw every change; each was rendered once for both.
        assert received == [f"{u}@{v}" for v in range(1, versions + 1) for u in range(balances)]
        assert len(rendered) == balances * versions
        # The slow one holds the latest rendering of at most MAX_PENDING_KEYS balances.
        assert len(slow.pending) == MAX_PENDING_KEYS and slow.dropped > 0
        assert {version for version, _ in slow.pending.values()} == {versions}
        latest = await slow.take()
        assert latest == [f"{u}@{versions}" for u in range(balances - MAX_PENDING_KEYS, balances)]
    finally:
        fanout.leave(slow)
        fanout.leave(fast)
    assert fanout.subscriber_count == 0 and not broker.hub.listeners


async def test_versions_never_go_backwards_and_republished_rows_are_not_rendered() -> None:
    broker = InProcessBroker()
    fanout = Fanout(broker, _no_snapshots)
    rendered: list[int] = []

    async def render(event: LiveEvent) -> int:
        rendered.append(event.version)
        return event.version

    channel = application_channel(1)
    subscriber = await fanout.join(Topic(1, end_user_id=5), Selection("doc", lambda: render))
    try:
        subscriber.mark_delivered((1, 5), 4)  # its first snapshot was version 4
        for version in (3, 4, 6, 5, 6, 7):
            await broker.publish(channel, _envelope(5, version))
            await asyncio.sleep(0)
        await broker.publish(channel, _envelope(6, 9))  # another End User's
        # 6 then 7 of one balance, unread: conflated to the latest.
        assert await asyncio.wait_for(subscriber.take(), 1) == [7]
        await asyncio.sleep(0.01)
        assert rendered == [3, 4, 6, 7]  # once per new version; the other End User: never
    finally:
        fanout.leave(subscriber)


def _operation_tasks() -> list[asyncio.Task]:
    """The handlers' operation tasks still running in this (the server's) loop."""
    names = ("run_operation", "handle_async_results")
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith(names)]


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_an_idle_subscription_runs_no_task_and_keeps_its_protocol_state(
    server, http, monkeypatch, protocol
) -> None:
    """No task while idle, yet the operation stays counted by the per-connection limit,
    stops (legacy: answered with `complete`), gets events, and leaves on close."""
    from api.transport.handlers import LiveGraphQLWSHandler, LiveTransportWSHandler

    for handler in (LiveTransportWSHandler, LiveGraphQLWSHandler):  # the view passes 100
        limit = property(lambda _: 2, lambda *_: None)
        monkeypatch.setattr(handler, "max_subscriptions_per_connection", limit, raising=False)
    app = await application(server, http, users=1, credits_each=10)
    (u0,) = app.end_user_ids
    base = server.realtime.subscriber_count
    start = "subscribe" if protocol == TRANSPORT_WS else "start"
    stop = "complete" if protocol == TRANSPORT_WS else "stop"
    variables = {"app": app.id, "endUser": u0, "pool": "ai"}  # one snapshot each
    payload = {"query": REMAINING, "variables": variables}

    async def receive(ws: ClientConnection) -> dict:
        return json.loads(await asyncio.wait_for(ws.recv(), 5))

    async with subscriber(server, app.reader.key, REMAINING, protocol, **variables) as ws:
        await ws.send(json.dumps({"id": "8", "type": start, "payload": payload}))
        firsts = [await receive(ws), await receive(ws)]
        assert {(m["id"], m["payload"]["data"]["balanceChanged"]["remaining"]) for m in firsts} == {
            ("7", 10),
            ("8", 10),
        }
        assert server.realtime.subscriber_count == base + 2
        assert _operation_tasks() == []
        await ws.send(json.dumps({"id": "9", "type": start, "payload": payload}))
        refused = await receive(ws)
        assert (refused["type"], refused["id"]) == ("error", "9")
        assert "Subscription limit reached" in json.dumps(refused["payload"])

        await ws.send(json.dumps({"id": "8", "type": stop}))
        if protocol == LEGACY_WS:
            assert await receive(ws) == {"type": "complete", "id": "8"}
        await asyncio.sleep(0.1)
        assert server.realtime.subscriber_count == base + 1
        consumed = await app.admin(CONSUME, input=consume_input(app, {"id": u0}, credits=3))
        version = consumed["consumeCredits"]["balance"]["version"]
        change = await receive(ws)
        assert change["id"] == "7"
        assert change["payload"]["data"]["balanceChanged"] == {"remaining": 7, "version": version}
        assert _operation_tasks() == []

        await ws.send(json.dumps({"id": "8", "type": start, "payload": payload}))  # room again
        again = await receive(ws)
        assert again["id"] == "8" and again["payload"]["data"]["balanceChanged"]["remaining"] == 7
        with pytest.raises(TimeoutError):
            await receive_within(ws, 0.3)  # the stopped operation got nothing
    for _ in range(100):
        if server.realtime.subscriber_count == base:
            break
        await asyncio.sleep(0.02)
    assert server.realtime.subscriber_count == base


async def receive_within(ws: ClientConnection, seconds: float) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), seconds)
