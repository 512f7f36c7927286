"""The WebSocket protocols' edge cases, as Strawberry answers them, through our handlers
(api/transport/, which read messages and keep operations their own way) or, with the fast
paths off, Strawberry's stock ones: pings, closes for a subscribe before connection_init
(4401), a duplicate id (4409), a second connection_init (4429), a message that is not text
or not JSON or of no known type (4400), no connection_init in time (4408); a query over the
socket; legacy graphql-ws's closes and its tolerance of junk. Raw frames from a plain
websockets client."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from resolvers.cost_budgets import DEFAULT_MAX_QUERY_COST
from resolvers.runtime.versions import fast_paths_enabled
from tests import applications
from tests.subscribing import LEGACY_WS, TRANSPORT_WS, initialised, receive, send, socket

REMAINING = """
subscription($app: ID!, $endUser: ID) {
  balanceChanged(applicationId: $app, pool: "ai", endUserId: $endUser) { remaining }
}"""


async def application(server: Any, **sizes: int) -> Any:
    """An application with End Users (only its ids and keys are used here)."""
    async with httpx.AsyncClient(timeout=60) as http:
        return await applications.application(server, http, **sizes)


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason the server sent."""
    with pytest.raises(ConnectionClosed) as caught:
        while True:  # anything sent before the close is skipped
            await asyncio.wait_for(ws.recv(), 5)
    assert caught.value.rcvd is not None
    return caught.value.rcvd.code, caught.value.rcvd.reason


def subscribe(app: Any, operation_id: str = "7") -> dict:
    variables = {"app": app.id, "endUser": app.end_user_ids[0]}
    payload = {"query": REMAINING, "variables": variables}
    return {"id": operation_id, "type": "subscribe", "payload": payload}


async def test_pings_are_answered_before_and_after_connection_init(server) -> None:
    async with socket(server) as ws:
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}
        await initialised(ws, server.organization_key)
        await send(ws, {"type": "ping", "payload": {"at": 1}})
        assert await receive(ws) == {"type": "pong"}
        await send(ws, {"type": "pong"})  # unsolicited: ignored
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}


async def test_a_subscribe_before_connection_init_is_unauthorized(server) -> None:
    app = await application(server, users=1)
    async with socket(server) as ws:
        await send(ws, subscribe(app))
        assert await closed_with(ws) == (4401, "Unauthorized")


async def test_a_duplicate_operation_id_closes_the_socket(server) -> None:
    app = await application(server, users=1, credits_each=10)
    async with socket(server) as ws:
        await initialised(ws, app.reader.key)
        await send(ws, subscribe(app))
        first = await receive(ws)
        assert first["type"] == "next" and first["payload"]["data"]["balanceChanged"] == {
            "remaining": 10
        }
        await send(ws, subscribe(app))  # the same id, still live (idle: no task of its own)
        assert await closed_with(ws) == (4409, "Subscriber for 7 already exists")


async def test_a_completed_id_can_be_used_again(server) -> None:
    app = await application(server, users=1, credits_each=10)
    async with socket(server) as ws:
        await initialised(ws, app.reader.key)
        for _ in range(3):
            await send(ws, subscribe(app))
            assert (await receive(ws))["type"] == "next"
            await send(ws, {"id": "7", "type": "complete"})
            await asyncio.sleep(0.05)
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}  # nothing else was sent meanwhile


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("{not json", "WebSocket message must be valid JSON"),
        (b"\x00binary", "WebSocket message type must be text"),
        ({"type": "junk"}, "Unknown message type: junk"),
        ({"payload": {}}, "Failed to parse message"),
        ({"type": "connection_init", "payload": "text"}, "Invalid connection init payload"),
    ],
)
async def test_a_message_the_protocol_does_not_know_closes_with_4400(
    server, message: Any, reason: str
) -> None:
    async with socket(server) as ws:
        await ws.send(json.dumps(message) if isinstance(message, dict) else message)
        assert await closed_with(ws) == (4400, reason)


async def test_a_second_connection_init_closes_with_4429(server) -> None:
    async with socket(server) as ws:
        await initialised(ws, server.organization_key)
        await send(ws, {"type": "connection_init", "payload": {}})
        assert await closed_with(ws) == (4429, "Too many initialisation requests")


async def test_no_connection_init_in_time_closes_with_4408(server, monkeypatch) -> None:
    quick = property(lambda _: timedelta(seconds=0.3), lambda *_: None)
    # Strawberry's handler: the stock one, and the base of ours
    monkeypatch.setattr(
        BaseGraphQLTransportWSHandler, "connection_init_wait_timeout", quick, raising=False
    )
    async with socket(server) as ws:
        assert await closed_with(ws) == (4408, "Connection initialisation timeout")
    async with socket(server) as ws:  # initialised in time: the timeout never fires
        await initialised(ws, server.organization_key)
        await asyncio.sleep(0.6)
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}


async def test_a_query_over_the_socket_is_answered_then_completed(server) -> None:
    app = await application(server, users=1)
    async with socket(server) as ws:
        await initialised(ws, app.reader.key)
        query = {"query": "query { __typename }"}
        await send(ws, {"id": "q", "type": "subscribe", "payload": query})
        assert await receive(ws) == {
            "id": "q",
            "type": "next",
            "payload": {
                "data": {"__typename": "Query"},
                "extensions": {"cost": {"requested": 0, "limit": DEFAULT_MAX_QUERY_COST}},
            },
        }
        assert await receive(ws) == {"id": "q", "type": "complete"}
        invalid = {"query": "subscription { nothingHere }"}
        await send(ws, {"id": "v", "type": "subscribe", "payload": invalid})
        refused = await receive(ws)
        assert (refused["id"], refused["type"]) == ("v", "error")
        await send(ws, {"id": "s", "type": "subscribe", "payload": {"query": "subscription {"}})
        code, _ = await closed_with(ws)
        assert code == 4400  # a syntax error closes the socket


async def test_the_legacy_protocol_closes_and_tolerates_as_strawberry_does(server) -> None:
    app = await application(server, users=1, credits_each=10)
    start = {**subscribe(app), "type": "start"}
    async with socket(server, LEGACY_WS) as ws:
        await send(ws, start)  # before connection_init
        assert await closed_with(ws) == (4401, "Unauthorized")
    async with socket(server, LEGACY_WS) as ws:
        await ws.send("{not json")  # ignored
        await send(ws, {"type": "junk"})  # ignored
        await initialised(ws, app.reader.key)
        await send(ws, start)
        first = await receive(ws)
        assert first["type"] == "data" and first["payload"]["data"]["balanceChanged"] == {
            "remaining": 10
        }
        await send(ws, {"id": "7", "type": "stop"})
        assert await receive(ws) == {"type": "complete", "id": "7"}
        await ws.send(b"\x00binary")
        assert await closed_with(ws) == (1002, "WebSocket message type must be text")
    async with socket(server, LEGACY_WS) as ws:
        await initialised(ws, app.reader.key)
        await send(ws, {"type": "connection_terminate"})
        assert (await closed_with(ws))[0] == 1000
    async with socket(server, LEGACY_WS) as ws:
        await send(ws, {"type": "connection_init", "payload": {"authorization": "Bearer ug_x_y"}})
        assert (await receive(ws))["type"] == "connection_error"
        # refused, as on graphql-transport-ws; Strawberry's stock handler closes with 1011
        # (a difference tests/realtime/test_websocket_differential.py lists)
        refused = (4403, "Forbidden") if fast_paths_enabled() else (1011, "")
        assert await closed_with(ws) == refused


async def test_a_cross_origin_handshake_is_refused_and_an_unknown_protocol_closed(server) -> None:
    """Strawberry's origin check (no allowed origins configured) and its 4406."""
    from websockets.exceptions import InvalidStatus

    url = server.graphql.replace("http", "ws", 1)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, subprotocols=[TRANSPORT_WS], origin="https://elsewhere.example"):  # type: ignore[arg-type,list-item]
            pass
    assert refused.value.response.status_code == 403
    same_origin = server.url  # a page of the service itself, and a client sending no Origin
    for origin in (same_origin, None):
        async with connect(url, subprotocols=[TRANSPORT_WS], origin=origin) as ws:  # type: ignore[arg-type,list-item]
            await initialised(ws, server.organization_key)
    async with connect(url, subprotocols=["graphql-unknown"]) as ws:  # type: ignore[list-item]
        assert await closed_with(ws) == (4406, "Subprotocol not acceptable")
