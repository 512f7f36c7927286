"""Our WebSocket transport (api/transport/) against Strawberry's stock handlers on the same
message sequences, both protocols. Two servers share one database: the service as it runs,
and the same app with `fast_websockets=False` (Strawberry's handlers, each live event
executed per subscriber). Every sequence is played against both, each time with a new
application, and what the client sees (every frame, in order, and the close) is compared
once the ids that differ by nature are named alike. Where ours differs on purpose, the
difference is listed in DELIBERATE with its reason; any other difference fails, so a
change in Strawberry's handlers (a fix such as its `connection_init` one) shows here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.applications import App, application
from tests.conftest import Backend, Server, serving
from tests.graphql_client import CONSUME
from tests.subscribing import LEGACY_WS, TRANSPORT_WS

BALANCE = """
subscription($app: ID!, $endUser: ID) {
  balanceChanged(applicationId: $app, pool: "ai", endUserId: $endUser) {
    remaining version cause status
  }
}"""
UNKNOWN_FIELD = "subscription($app: ID!) { balanceChanged(applicationId: $app) { nope } }"
APPLICATION = "query($app: ID!) { application(id: $app) { id pools { key remaining } } }"
FRAME_SECONDS = 5.0  # the longest a frame the sequence waits for may take
QUIET_SECONDS = 0.3  # how long "nothing more" is watched for


# ---------------------------------------------------------------- sequences


@dataclass(frozen=True)
class Send:
    message: dict[str, Any] | str  # a str goes as it is (not JSON, say)


@dataclass(frozen=True)
class Expect:
    frames: int  # waits for this many frames (a missing one is recorded, not awaited)


@dataclass(frozen=True)
class Quiet:
    """Records whatever arrives in QUIET_SECONDS (nothing, usually)."""


@dataclass(frozen=True)
class Consume:
    """One credit of the first End User consumed over HTTP: an event for its balance."""


@dataclass(frozen=True)
class Closed:
    """Waits for the server to close the socket; records the code and reason."""


Step = Send | Expect | Quiet | Consume | Closed


def init(app: App, key: str | None = None) -> Send:
    credential = key if key is not None else app.reader.key
    return Send({"type": "connection_init", "payload": {"authorization": f"Bearer {credential}"}})


def balance_variables(app: App) -> dict[str, Any]:
    return {"app": app.id, "endUser": app.end_user_ids[0]}


def subscribe(operation_id: str, query: str, variables: dict[str, Any]) -> Send:
    payload = {"query": query, "variables": variables}
    return Send({"id": operation_id, "type": "subscribe", "payload": payload})


def start(operation_id: str, query: str, variables: dict[str, Any]) -> Send:
    payload = {"query": query, "variables": variables}
    return Send({"id": operation_id, "type": "start", "payload": payload})


Sequence = Callable[[App], list[Step]]

TRANSPORT_SEQUENCES: dict[str, Sequence] = {
    "a live balance, a change, complete, ping": lambda app: [
        init(app),
        Expect(1),
        subscribe("7", BALANCE, balance_variables(app)),
        Expect(1),
        Consume(),
        Expect(1),
        Send({"id": "7", "type": "complete"}),
        Quiet(),
        Send({"type": "ping"}),
        Expect(1),
    ],
    "subscribe before connection_init": lambda app: [
        subscribe("7", BALANCE, balance_variables(app)),
        Closed(),
    ],
    "a second connection_init": lambda app: [init(app), Expect(1), init(app), Closed()],
    "a refused credential": lambda app: [init(app, "ug_nope_nope"), Closed()],
    "a message that is not JSON": lambda app: [init(app), Expect(1), Send("{nope"), Closed()],
    "a message of no known type": lambda app: [
        init(app),
        Expect(1),
        Send({"type": "nope"}),
        Closed(),
    ],
    "a duplicate operation id": lambda app: [
        init(app),
        Expect(1),
        subscribe("7", BALANCE, balance_variables(app)),
        Expect(1),
        subscribe("7", BALANCE, balance_variables(app)),
        Closed(),
    ],
    "a document that does not parse": lambda app: [
        init(app),
        Expect(1),
        subscribe("1", "subscription {", {}),
        Expect(1),
        Send({"type": "ping"}),
        Expect(1),
    ],
    "a document that does not validate": lambda app: [
        init(app),
        Expect(1),
        subscribe("1", UNKNOWN_FIELD, {"app": app.id}),
        Expect(1),
        Quiet(),
    ],
    "an application the key cannot see": lambda app: [
        init(app),
        Expect(1),
        subscribe("1", BALANCE, {"app": "987654321", "endUser": None}),
        Expect(1),
        Quiet(),
    ],
    "a query over the socket (refused: subscriptions only)": lambda app: [
        init(app),
        Expect(1),
        subscribe("q", APPLICATION, {"app": app.id}),
        Expect(1),
        Quiet(),
    ],
    "complete of an unknown id, then ping": lambda app: [
        init(app),
        Expect(1),
        Send({"id": "nope", "type": "complete"}),
        Send({"type": "ping"}),
        Expect(1),
    ],
}

LEGACY_SEQUENCES: dict[str, Sequence] = {
    "a live balance, a change, stop, terminate": lambda app: [
        init(app),
        Expect(1),
        start("1", BALANCE, balance_variables(app)),
        Expect(1),
        Consume(),
        Expect(1),
        Send({"id": "1", "type": "stop"}),
        Expect(1),
        Send({"type": "connection_terminate"}),
        Closed(),
    ],
    "junk is ignored": lambda app: [
        init(app),
        Expect(1),
        Send("junk"),
        start("1", BALANCE, balance_variables(app)),
        Expect(1),
    ],
    "a refused credential": lambda app: [init(app, "ug_nope_nope"), Expect(1), Closed()],
    "a document that does not parse": lambda app: [
        init(app),
        Expect(1),
        start("1", "subscription {", {}),
        Expect(1),
        Quiet(),
    ],
    "an application the key cannot see": lambda app: [
        init(app),
        Expect(1),
        start("1", BALANCE, {"app": "987654321", "endUser": None}),
        Expect(1),
        Quiet(),
    ],
}

# (protocol, sequence) -> (what Strawberry's handler shows, what ours shows instead, why)
DELIBERATE: dict[tuple[str, str], tuple[Any, Any, str]] = {
    (LEGACY_WS, "a refused credential"): (
        ("close", 1011, ""),
        ("close", 4403, "Forbidden"),
        "after connection_error ours closes with 4403, as graphql-transport-ws does;"
        " Strawberry's 1011 says the server failed (and the request log would count a"
        " server error)",
    ),
}

# Needing an event after a commit: on SQLite each server's relay publishes to its own
# in-process broker, so only PostgreSQL with Redis carries an event to both servers.
NEEDS_EVENTS = {
    name
    for table in (TRANSPORT_SEQUENCES, LEGACY_SEQUENCES)
    for name in table
    if "a change" in name
}


# ---------------------------------------------------------------- playing them


@pytest.fixture(scope="module")
async def stock_server(backend: Backend) -> AsyncIterator[Server]:
    async with serving(backend, fast_websockets=False) as served:
        yield served


def _named(text: str, app: App) -> Any:
    """A frame with the application's and End Users' ids named alike on both servers."""
    for real, name in ((app.id, "<app>"), *((u, "<end user>") for u in app.end_user_ids)):
        text = text.replace(json.dumps(real), json.dumps(name))
    return json.loads(text)


async def _frame(ws: ClientConnection, app: App, protocol: str, seconds: float) -> Any:
    while True:
        frame = _named(await asyncio.wait_for(ws.recv(), seconds), app)  # type: ignore[arg-type]
        if protocol == LEGACY_WS and frame == {"type": "ka"}:
            continue  # keep-alives come by the clock, not by the sequence
        return ("frame", frame)


async def consume_input(app: App) -> None:
    data = await app.admin(
        CONSUME,
        input={
            "applicationId": app.id,
            "endUser": {"id": app.end_user_ids[0]},
            "pool": "ai",
            "credits": 1,
            "feature": "differential",
        },
    )
    assert data["consumeCredits"]["errors"] == [], data


async def played(server: Server, protocol: str, sequence: Sequence) -> list[Any]:
    """What a client sees of the sequence on `server`."""
    seen: list[Any] = []
    async with httpx.AsyncClient(timeout=30) as http:
        app = await application(server, http, users=2, credits_each=10)
        url = server.graphql.replace("http", "ws", 1)
        async with connect(url, subprotocols=[protocol]) as ws:  # type: ignore[list-item]
            try:
                for step in sequence(app):
                    if isinstance(step, Send):
                        message = step.message
                        await ws.send(message if isinstance(message, str) else json.dumps(message))
                    elif isinstance(step, Expect):
                        for _ in range(step.frames):
                            try:
                                seen.append(await _frame(ws, app, protocol, FRAME_SECONDS))
                            except TimeoutError:
                                seen.append(("no frame",))
                    elif isinstance(step, Quiet):
                        try:
                            seen.append(await _frame(ws, app, protocol, QUIET_SECONDS))
                        except TimeoutError:
                            pass
                    elif isinstance(step, Consume):
                        await consume_input(app)
                    else:
                        while True:  # frames before the close are part of what is seen
                            seen.append(await _frame(ws, app, protocol, FRAME_SECONDS))
            except ConnectionClosed as closed:
                assert closed.rcvd is not None, "the client closed"
                seen.append(("close", closed.rcvd.code, closed.rcvd.reason))
    return seen


def _expected_of_ours(protocol: str, name: str, stock: list[Any]) -> list[Any]:
    """Strawberry's transcript with our deliberate differences applied."""
    deliberate = DELIBERATE.get((protocol, name))
    if deliberate is None:
        return stock
    theirs, ours, _ = deliberate
    assert theirs in stock, f"{name}: Strawberry no longer shows {theirs}: {stock}"
    return [ours if entry == theirs else entry for entry in stock]


CASES = [(TRANSPORT_WS, name) for name in TRANSPORT_SEQUENCES] + [
    (LEGACY_WS, name) for name in LEGACY_SEQUENCES
]


@pytest.mark.parametrize(("protocol", "name"), CASES, ids=[f"{p}: {n}" for p, n in CASES])
async def test_our_transport_answers_as_strawberrys_handler(
    backend: Backend, server: Server, stock_server: Server, protocol: str, name: str
) -> None:
    if name in NEEDS_EVENTS and not backend.postgres:
        pytest.skip("two servers' events meet only through Redis (PostgreSQL backend)")
    sequences = TRANSPORT_SEQUENCES if protocol == TRANSPORT_WS else LEGACY_SEQUENCES
    ours = await played(server, protocol, sequences[name])
    stock = await played(stock_server, protocol, sequences[name])
    assert ours == _expected_of_ours(protocol, name, stock), (ours, stock)
    assert ours and ("no frame",) not in ours, ours  # the sequence saw what it waited for
