"""Subscribing in tests: GraphQL clients over WebSocket (gql), raw protocol frames, and the
documents and waits the realtime tests share."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gql import Client, GraphQLRequest, gql
from gql.transport.websockets import WebsocketsTransport
from websockets.asyncio.client import ClientConnection, connect

from models.records import OutboxEvent

BALANCE_CHANGED = gql(
    """
subscription($app: ID!, $pool: String, $endUser: ID) {
  balanceChanged(applicationId: $app, pool: $pool, endUserId: $endUser) {
    applicationId pool endUserId version cause allocated used remaining expired status
    endUser { externalId }
  }
}"""
)


@asynccontextmanager
async def subscribed(
    url: str,
    key: str,
    protocol: str = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL,
    document: Any = None,
    **variables: Any,
) -> AsyncIterator[asyncio.Queue]:
    """Events of one subscription, received in the background into a queue."""
    transport = WebsocketsTransport(
        url=url.replace("http", "ws", 1),
        init_payload={"authorization": f"Bearer {key}"},
        subprotocols=[protocol],
    )
    events: asyncio.Queue = asyncio.Queue()
    async with Client(transport=transport) as session:

        async def receive() -> None:
            try:
                request = GraphQLRequest(document or BALANCE_CHANGED, variable_values=variables)
                async for result in session.subscribe(request):
                    await events.put(next(iter(result.values())))
            except Exception as error:  # surfaced to the test through the queue
                await events.put(error)

        task = asyncio.create_task(receive())
        try:
            yield events
        finally:
            task.cancel()


async def next_event(events: asyncio.Queue, wait: float = 5.0) -> dict:
    event = await asyncio.wait_for(events.get(), wait)
    if isinstance(event, BaseException):
        raise event
    return event


SET_THRESHOLD = """
mutation($input: SetLowBalanceThresholdInput!) {
  setLowBalanceThreshold(input: $input) { pool { key endUserLowBalanceThreshold } errors { code } }
}"""


ALERTS = """
query($id: ID!) {
  application(id: $id) {
    alerts(first: 10) { totalCount edges { node { id kind remaining acknowledged pool } } }
  }
}"""


TRANSPORT_WS = "graphql-transport-ws"


LEGACY_WS = "graphql-ws"


@asynccontextmanager
async def subscriber(
    server: Any, key: str, document: str, protocol: str = TRANSPORT_WS, **variables: Any
) -> AsyncIterator[ClientConnection]:
    """One subscription on its own socket (a plain websockets client: the raw frames)."""
    async with connect(server.graphql.replace("http", "ws", 1), subprotocols=[protocol]) as ws:
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        start = "subscribe" if protocol == TRANSPORT_WS else "start"
        payload = {"query": document, "variables": variables}
        await ws.send(json.dumps({"id": "7", "type": start, "payload": payload}))
        yield ws


async def frame(ws: ClientConnection, wait: float = 5.0) -> str:
    """The next result frame, as sent."""
    while True:
        text = await asyncio.wait_for(ws.recv(), wait)
        assert isinstance(text, str)
        if json.loads(text)["type"] in ("next", "data"):
            return text


async def settled(server: Any, application_id: int) -> None:
    """Every outbox row of the application published and dispatched, so that the render
    counter moves only for what the test does next."""
    pending = OutboxEvent.filter(application_id=application_id)
    for _ in range(500):
        if not await pending.exists():
            break
        await asyncio.sleep(0.02)
    while True:
        before = server.realtime.fanout.renderings(application_id)
        await asyncio.sleep(0.3)
        if server.realtime.fanout.renderings(application_id) == before:
            return


@asynccontextmanager
async def socket(server: Any, protocol: str = TRANSPORT_WS) -> AsyncIterator[ClientConnection]:
    async with connect(server.graphql.replace("http", "ws", 1), subprotocols=[protocol]) as ws:
        yield ws


async def send(ws: ClientConnection, message: dict) -> None:
    await ws.send(json.dumps(message))


async def receive(ws: ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def initialised(ws: ClientConnection, key: str) -> None:
    await send(ws, {"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}})
    assert (await receive(ws))["type"] == "connection_ack"
