"""WebSocket fan-out of balance events: one server process, N subscribers in this (client)
process, each figure beside a raw baseline taken in the same run on the same server.

The server
    One uvicorn process (`--ws websockets-sansio`, no access log) serving the real app
    (`api.app.create_app`) on a scratch PostgreSQL database and a Redis of the run's own
    (started here on a free port: Redis pub/sub channels are shared by every database of a
    server, so the shared Redis would mix other runs' events in), plus the raw baseline on
    the same Starlette app and uvicorn: `/raw`, a bare Starlette WebSocket endpoint that
    accepts and then only waits for the client to leave, and two control routes that send
    to its connections bytes serialized once (`/raw/broadcast`: `count` messages, each sent
    to every connection in turn, `for ws in clients: await ws.send_text(text)`;
    `/raw/trickle`: `rate` messages a second for `seconds`, each to one random connection).
    A raw message has the shape and size of a balance event frame and carries the server's
    clock at its serialization. A fresh server runs for each N; both processes raise their
    open-file limit to the hard limit (resource.setrlimit).

The subscribers
    Plain `websockets` clients speaking graphql-transport-ws (`connection_init` with the
    credential, `subscribe`, then `next` frames), opened 64 at a time; each has a reader task
    recording the arrival time of every frame (parsed after the phase).

Phases, for each N of `--subscribers` (default 1,000 and 5,000)
    memory: the server's RSS (VmRSS) before, after N bare connections to `/raw` and after N
        widget subscriptions (below) as well, each read once the connections are idle and
        the RSS has settled; growth / N for each kind. Both kinds stay open, side by side,
        so neither reuses memory the other freed. Target: a subscription at most 1.25x a
        bare connection.
    widget load: every subscriber watches its own End User, `balanceChanged(applicationId,
        pool: "ai", endUserId)`, with an End User token of its own (signed as
        `issueEndUserToken` does); `--rate` (default 50) `consumeCredits` of 1 credit per
        second, each for a random subscribed End User, over HTTP for `--seconds` (default
        20). Latency: the frame's arrival minus the event's `at`, the time the ledger
        transaction stamped on its outbox row just before committing (so the end of the
        transaction counts too), both read from the same machine's clock. Raw baseline:
        `/raw/trickle` at the same rate to the N bare connections, arrival minus the
        server's clock at serialization. Target at N = 5,000: p99 under 100 ms.
    dashboard load: the widget subscriptions are closed and N others opened, every one
        watching the whole application with the application's READ key,
        `balanceChanged(applicationId)`; `--changes` (default 20) `purchaseCredits` of 1
        credit, one after the other, each a pool-level change (one event). Rate: frames
        received by all subscribers after their snapshot / (last arrival - the first
        event's `at`); the phase ends when every subscriber has the last change's version.
        A subscriber that fell behind gets the latest snapshot (conflation): the received
        count says how many of the N x changes were sent. Raw baseline: `/raw/broadcast` of
        as many messages to the N bare connections, all received / (last arrival - first
        message's serialization). Target: at least 50% of the raw rate.
    `--per-subscriber` adds, on a further server whose WebSocket handlers are Strawberry's
    own (each subscriber executes the selection for every event), the memory and dashboard
    figures of that path, for comparison.

Other work on the machine (2 cores shared by server, client, PostgreSQL and Redis) moves
the figures: compare within one run.

    .venv/bin/python -m bench.ws_fanout [--subscribers 1000,5000] [--quick]

`--quick` is a smoke run (200 subscribers, 4 s of widget load, 5 changes); `--only memory`
runs the memory phase alone (no widget or dashboard load). `--profile`
records the server with py-spy during the widget and dashboard phases (raw
`--format raw` files in the work directory, named in the output). Exit status 1 when a
frame is an error or a phase does not complete; missed targets are printed, not reflected
in the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect

from bench.harness import (
    DEFAULT_ADMIN_DSN,
    PySpy,
    Server,
    create_database,
    database_urls,
    drop_database,
    free_port,
    open_database,
    percentile,
    rss_kb,
    start_server,
)

SECRET = "ws-fanout-benchmark-secret-of-at-least-32-bytes"
POOL = "ai"
PER_SUBSCRIBER_ENV = "WS_FANOUT_PER_SUBSCRIBER"
CONNECT_CONCURRENCY = 64
TARGET_P99_MS = 100.0
TARGET_RATE_RATIO = 0.5
TARGET_MEMORY_RATIO = 1.25

WIDGET = """subscription Widget($app: ID!, $endUser: ID) {
  balanceChanged(applicationId: $app, pool: "ai", endUserId: $endUser) {
    pool endUserId version cause at allocated used remaining expired status
  }
}"""
DASHBOARD = """subscription Dashboard($app: ID!) {
  balanceChanged(applicationId: $app) {
    pool endUserId version cause at allocated used remaining expired status
  }
}"""
CONSUME = """mutation Consume($input: ConsumeCreditsInput!) {
  consumeCredits(input: $input) { balance { version } errors { code } }
}"""
PURCHASE = """mutation Purchase($input: PurchaseCreditsInput!) {
  purchaseCredits(input: $input) { pool { version } errors { code } }
}"""


def raise_open_files_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ------------------------------------------------------------------ server (in uvicorn)


def raw_message(at: float) -> str:
    """A frame of the size and shape of a balance event, serialized once."""
    event = {
        "pool": POOL,
        "endUserId": None,
        "version": 123456,
        "cause": "PURCHASE",
        "at": at,
        "allocated": 123456789,
        "used": 1234567,
        "remaining": 876543210,
        "expired": 0,
        "status": "OK",
    }
    payload = {"data": {"balanceChanged": event}}
    return json.dumps({"id": "1", "type": "next", "payload": payload}, separators=(",", ":"))


class RawEndpoint:
    """The baseline: bare WebSocket connections and bytes sent to them as they are."""

    def __init__(self) -> None:
        self.clients: dict[WebSocket, None] = {}  # ordered, O(1) removal
        self.tasks: set[asyncio.Task[None]] = set()

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.clients[websocket] = None
        try:
            await self.listen(websocket)
        finally:
            self.clients.pop(websocket, None)

    @staticmethod
    async def listen(websocket: WebSocket) -> None:
        """Reads (and drops) whatever the client sends until it leaves."""
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    async def talking(self, websocket: WebSocket) -> None:
        """A bare connection outside the broadcasts, for clients that send messages."""
        await websocket.accept()
        await self.listen(websocket)

    async def broadcast(self, request: Request) -> JSONResponse:
        count = int(request.query_params["count"])
        for _ in range(count):
            text = raw_message(time.time())
            for websocket in list(self.clients):
                await websocket.send_text(text)
        return JSONResponse({"sent": count * len(self.clients)})

    async def trickle(self, request: Request) -> JSONResponse:
        rate, seconds = float(request.query_params["rate"]), float(request.query_params["seconds"])

        async def send() -> None:
            start = time.monotonic()
            for n in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                clients = list(self.clients)
                await random.choice(clients).send_text(raw_message(time.time()))

        task = asyncio.create_task(send())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return JSONResponse({"started": True})

    async def collect(self, _: Request) -> JSONResponse:
        """A full garbage collection, so that the RSS read next holds live objects only (the
        app collects the young generation rarely: leftovers of the set-up would count)."""
        return JSONResponse({"collected": gc.collect()})


def server_app() -> Starlette:
    """The uvicorn factory: the real app, plus the raw baseline routes."""
    from api.app import create_app

    raise_open_files_limit()
    # Per subscriber: Strawberry's stock WebSocket handlers (what the view serves when the
    # fast paths are off), every other fast path on: each event executed per subscriber.
    stock = bool(os.environ.get(PER_SUBSCRIBER_ENV))
    app = create_app(migrate=False, fast_websockets=False if stock else None)
    raw = RawEndpoint()
    app.router.routes[:0] = [
        WebSocketRoute("/raw", raw.endpoint),
        WebSocketRoute("/raw/talking", raw.talking),
        Route("/raw/broadcast", raw.broadcast, methods=["POST"]),
        Route("/raw/trickle", raw.trickle, methods=["POST"]),
        Route("/raw/gc", raw.collect, methods=["POST"]),
    ]
    return app


# ------------------------------------------------------------------------ client side


async def settled_rss(server: Server) -> int:
    """The server's RSS, after a garbage collection, once it stops moving (the connections'
    work is done)."""
    async with httpx.AsyncClient(timeout=60) as client:
        await client.post(f"{server.base}/raw/gc")
    pid = server.pid
    last = rss_kb(pid)[0]
    while True:
        await asyncio.sleep(1.0)
        now = rss_kb(pid)[0]
        if abs(now - last) < 256:
            return now
        last = now


@dataclass
class Subscriber:
    socket: ClientConnection
    frames: list[tuple[float, str | bytes]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def start_reading(self) -> None:
        async def read() -> None:
            async for message in self.socket:
                self.frames.append((time.time(), message))

        self.reader = asyncio.create_task(read())

    async def close(self) -> None:
        await self.socket.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


async def open_many(count: int, opener: Callable[[int], Awaitable[Subscriber]]) -> list[Subscriber]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int) -> Subscriber:
        async with gate:
            return await opener(index)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def close_all(subscribers: list[Subscriber]) -> None:
    gate = asyncio.Semaphore(256)

    async def one(subscriber: Subscriber) -> None:
        async with gate:
            await subscriber.close()

    await asyncio.gather(*(one(s) for s in subscribers))


async def open_raw(base: str, _: int) -> Subscriber:
    subscriber = Subscriber(await connect(f"{base}/raw", ping_interval=None, open_timeout=120))
    subscriber.start_reading()
    return subscriber


async def open_talking(base: str, setup: Setup, index: int) -> Subscriber:
    """A bare connection whose client sends what a subscriber sends (a connection_init and
    a subscribe message of the same size): the server then keeps the inflate state of
    permessage-deflate that a silent client never makes it touch."""
    socket = await connect(f"{base}/raw/talking", ping_interval=None, open_timeout=120)
    init = {
        "type": "connection_init",
        "payload": {"authorization": f"Bearer {setup.tokens[index]}"},
    }
    variables = {"app": str(setup.application_id), "endUser": str(setup.end_users[index])}
    query = {"query": WIDGET, "variables": variables}
    await socket.send(json.dumps(init))
    await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
    return Subscriber(socket)


async def open_subscription(
    base: str, credential: str, document: str, variables: dict[str, Any]
) -> Subscriber:
    """A graphql-transport-ws subscription, once its first frame (a snapshot) arrived."""
    socket = await connect(
        f"{base}/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        ping_interval=None,
        open_timeout=120,
    )
    init = {"type": "connection_init", "payload": {"authorization": f"Bearer {credential}"}}
    await socket.send(json.dumps(init))
    ack = json.loads(await socket.recv())
    if ack.get("type") != "connection_ack":
        raise RuntimeError(f"not acknowledged: {ack}")
    query = {"query": document, "variables": variables}
    await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
    first = json.loads(await asyncio.wait_for(socket.recv(), 120))
    if first.get("type") != "next" or "errors" in first["payload"]:
        raise RuntimeError(f"subscription refused: {first}")
    subscriber = Subscriber(socket)
    subscriber.start_reading()
    return subscriber


def events_of(subscriber: Subscriber) -> list[tuple[float, dict[str, Any]]]:
    """(arrival, balance event) of every frame recorded; an error frame raises."""
    events = []
    for arrival, text in subscriber.frames:
        message = json.loads(text)
        if message.get("type") != "next" or "errors" in message["payload"]:
            raise RuntimeError(f"unexpected frame: {message}")
        events.append((arrival, message["payload"]["data"]["balanceChanged"]))
    return events


def at_seconds(event: dict[str, Any]) -> float:
    at = event["at"]
    return at if isinstance(at, float) else datetime.fromisoformat(at).timestamp()


@dataclass
class Latencies:
    label: str
    values_ms: list[float]
    expected: int

    def line(self) -> str:
        v = self.values_ms
        return (
            f"  {self.label:<34} p50 {percentile(v, 0.5):7.1f} ms  p99 {percentile(v, 0.99):7.1f}"
            f" ms  max {max(v, default=float('nan')):7.1f} ms  ({len(v):,} of {self.expected:,})"
        )


@dataclass
class Rate:
    label: str
    received: int
    expected: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        return (
            f"  {self.label:<34} {self.per_second:11,.0f} deliveries/s  ({self.received:,} of"
            f" {self.expected:,} in {self.seconds:.2f} s)"
        )


@dataclass
class Setup:
    application_id: int
    end_users: list[int]
    read_key: str
    admin_key: str
    tokens: list[str]  # one End User token per End User, in the same order
    env: dict[str, str]


def ws_base(server: Server) -> str:
    return server.base.replace("http://", "ws://", 1)


async def start_fanout_server(setup: Setup, per_subscriber: bool, log_dir: Path) -> Server:
    """The real app plus the raw routes (`server_app`) in one uvicorn process, once it
    answers."""
    env = {**setup.env, **({PER_SUBSCRIBER_ENV: "1"} if per_subscriber else {})}
    server = start_server(
        lambda port: [
            *(sys.executable, "-m", "uvicorn", "bench.ws_fanout:server_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--ws", "websockets-sansio"),
            # as `usagegraph serve` runs it by default (USAGEGRAPH_WS_COMPRESSION off)
            *("--ws-per-message-deflate", "false", "--no-access-log", "--log-level", "warning"),
        ],
        env,
        log_dir,
    )
    await server.ready(setup.read_key)
    return server


class Profiler:
    """py-spy on the server during a phase, into the work directory."""

    def __init__(self, enabled: bool, out_dir: Path) -> None:
        self.spy = PySpy(enabled) if enabled else None
        self.out_dir = out_dir

    def start(self, pid: int, name: str) -> None:
        if self.spy is not None:
            self.spy.start(pid, self.out_dir / f"{name}.txt", rate=200)

    def stop(self) -> str:
        return "" if self.spy is None else self.spy.stop()


# --------------------------------------------------------------------------- phases


async def widget_phase(
    server: Server, setup: Setup, widgets: list[Subscriber], raws: list[Subscriber], args: Any
) -> tuple[Latencies, Latencies, int]:
    """Ours, then the raw trickle; returns both latency sets and the failed mutations."""
    for subscriber in widgets + raws:
        subscriber.frames.clear()
    watched = setup.end_users[: len(widgets)]
    count = int(args.rate * args.seconds)
    failures = 0
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {setup.admin_key}"},
        limits=httpx.Limits(max_connections=32),
        timeout=60,
    ) as client:

        async def consume(end_user: int) -> None:
            nonlocal failures
            variables = {
                "input": {
                    "applicationId": str(setup.application_id),
                    "endUser": {"id": str(end_user)},
                    "pool": POOL,
                    "credits": 1,
                    "feature": "ai_generation",
                }
            }
            answer = await client.post(
                f"{server.base}/graphql", json={"query": CONSUME, "variables": variables}
            )
            body = answer.json()
            if (
                answer.status_code != 200
                or body.get("errors")
                or body["data"]["consumeCredits"]["errors"]
            ):
                failures += 1

        start = time.monotonic()
        calls = []
        for n in range(count):
            await asyncio.sleep(max(0.0, start + n / args.rate - time.monotonic()))
            calls.append(asyncio.create_task(consume(random.choice(watched))))
        await asyncio.gather(*calls)
    await asyncio.sleep(1.0)  # the last events' way through relay, Redis and fan-out
    ours = [
        (arrival - at_seconds(event)) * 1000
        for subscriber in widgets
        for arrival, event in events_of(subscriber)
    ]

    async with httpx.AsyncClient(timeout=60) as client:
        await client.post(
            f"{server.base}/raw/trickle", params={"rate": args.rate, "seconds": args.seconds}
        )
    await asyncio.sleep(args.seconds + 1.0)
    raw = [
        (arrival - json.loads(text)["payload"]["data"]["balanceChanged"]["at"]) * 1000
        for subscriber in raws
        for arrival, text in subscriber.frames
    ]
    return (
        Latencies("balanceChanged (own End User)", ours, count),
        Latencies("raw (one bare connection each)", raw, count),
        failures,
    )


async def wait_until(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def dashboard_pool(number: int) -> str:
    return f"dash_{number:03d}"


async def dashboard_phase(
    server: Server, setup: Setup, dashboards: list[Subscriber], args: Any
) -> Rate:
    """`--changes` purchases, one in each of as many pools (distinct balances: none is
    conflated into another), sent at once; done when every subscriber has them all."""
    for subscriber in dashboards:
        subscriber.frames.clear()
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {setup.admin_key}"}, timeout=60
    ) as client:

        async def purchase(pool: str) -> None:
            variables = {
                "input": {"applicationId": str(setup.application_id), "pool": pool, "credits": 1}
            }
            answer = await client.post(
                f"{server.base}/graphql", json={"query": PURCHASE, "variables": variables}
            )
            payload = answer.json()["data"]["purchaseCredits"]
            if payload["errors"]:
                raise RuntimeError(f"purchase failed: {payload}")

        await asyncio.gather(*(purchase(dashboard_pool(n)) for n in range(args.changes)))

    def all_arrived() -> bool:  # checked often while frames arrive: cheaply
        return all(len(s.frames) >= args.changes for s in dashboards)

    if not await wait_until(all_arrived, 300):
        raise RuntimeError("some dashboard subscribers never got every change")
    events = [e for s in dashboards for e in events_of(s)]
    if {e["pool"] for _, e in events} != {dashboard_pool(n) for n in range(args.changes)}:
        raise RuntimeError("dashboard frames of other balances arrived")
    first = min(at_seconds(event) for _, event in events)
    last = max(arrival for arrival, _ in events)
    expected = args.changes * len(dashboards)
    return Rate("balanceChanged (whole application)", len(events), expected, last - first)


async def raw_broadcast_phase(server: Server, raws: list[Subscriber], changes: int) -> Rate:
    for subscriber in raws:
        subscriber.frames.clear()
    async with httpx.AsyncClient(timeout=600) as client:
        await client.post(f"{server.base}/raw/broadcast", params={"count": changes})
    expected = changes * len(raws)
    if not await wait_until(lambda: sum(len(s.frames) for s in raws) >= expected, 300):
        raise RuntimeError("raw broadcast incomplete")
    stamps = [
        json.loads(text)["payload"]["data"]["balanceChanged"]["at"]
        for s in raws
        for _, text in s.frames
    ]
    last = max(arrival for s in raws for arrival, _ in s.frames)
    return Rate("raw broadcast (serialized once)", expected, expected, last - min(stamps))


async def run_size(n: int, setup: Setup, args: Any, work: Path) -> list[str]:
    lines = [f"N = {n:,} subscribers"]
    server = await start_fanout_server(setup, per_subscriber=False, log_dir=work)
    profiler = Profiler(args.profile, work)
    try:
        base = ws_base(server)
        # Warm both paths (imports, caches, the database pool grown by as many concurrent
        # subscriptions as are opened at once), then measure from a settled RSS. The warm-up
        # connections stay open meanwhile: the bare ones measured first would otherwise
        # reuse the memory they freed, and look smaller than they are.
        warm = await warm_up(base, setup)
        before = await settled_rss(server)
        raws = await open_many(n, lambda i: open_raw(base, i))
        with_raw = await settled_rss(server)
        widgets = await open_many(n, lambda i: widget(base, setup, i))
        with_widgets = await settled_rss(server)
        talking = await open_many(n, lambda i: open_talking(base, setup, i))
        with_talking = await settled_rss(server)
        await close_all(talking + warm)
        bare_kb = (with_raw - before) / n
        live_kb = (with_widgets - with_raw) / n
        talking_kb = (with_talking - with_widgets) / n
        verdict = "met" if live_kb <= TARGET_MEMORY_RATIO * bare_kb else "MISSED"
        lines += [
            "  memory per idle connection (server RSS growth / N):",
            f"  bare WebSocket                     {bare_kb:7.1f} KB",
            f"  balanceChanged subscription        {live_kb:7.1f} KB = {live_kb / bare_kb:.2f}x"
            f" bare (target <= {TARGET_MEMORY_RATIO}x: {verdict})",
            f"  bare, client sent the same 2 msgs  {talking_kb:7.1f} KB (subscription ="
            f" {live_kb / talking_kb:.2f}x this)",
        ]
        if args.only == "memory":
            await close_all(widgets + raws)
            return lines

        profiler.start(server.pid, f"widget_{n}")
        ours, raw, failures = await widget_phase(server, setup, widgets, raws, args)
        note = profiler.stop()
        p99 = percentile(ours.values_ms, 0.99)
        lines.append(f"  widget load, {args.rate:g} consumptions/s for {args.seconds:g} s:{note}")
        lines += [ours.line(), raw.line()]
        if failures:
            lines.append(f"  {failures} consumptions FAILED")
        if n >= 5000:
            verdict = "met" if p99 < TARGET_P99_MS else "MISSED"
            lines.append(f"  target p99 < {TARGET_P99_MS:g} ms at N = 5,000: {verdict}")
        await close_all(widgets)

        dashboards = await open_many(n, lambda i: dashboard(base, setup))
        await asyncio.sleep(1.0)
        raw_rate = await raw_broadcast_phase(server, raws, args.changes)
        profiler.start(server.pid, f"dashboard_{n}")
        rate = await dashboard_phase(server, setup, dashboards, args)
        note = profiler.stop()
        ratio = rate.per_second / raw_rate.per_second
        lines.append(f"  dashboard load, {args.changes} pool-level changes:{note}")
        lines += [rate.line(), raw_rate.line()]
        verdict = "met" if ratio >= TARGET_RATE_RATIO else "MISSED"
        lines.append(f"  ratio {ratio:.0%} of raw (target >= {TARGET_RATE_RATIO:.0%}: {verdict})")
        await close_all(dashboards + raws)
    finally:
        profiler.stop()
        server.stop()
    if args.per_subscriber:
        lines += await run_per_subscriber(n, setup, args, work)
    return lines


async def run_per_subscriber(n: int, setup: Setup, args: Any, work: Path) -> list[str]:
    """Strawberry's own handlers: the selection executed per subscriber and event."""
    server = await start_fanout_server(setup, per_subscriber=True, log_dir=work)
    try:
        base = ws_base(server)
        warm = await warm_up(base, setup)
        before = await settled_rss(server)
        widgets = await open_many(n, lambda i: widget(base, setup, i))
        kb = (await settled_rss(server) - before) / n
        await close_all(widgets + warm)
        dashboards = await open_many(n, lambda i: dashboard(base, setup))
        await asyncio.sleep(1.0)
        rate = await dashboard_phase(server, setup, dashboards, args)
        await close_all(dashboards)
    finally:
        server.stop()
    rate.label = "per subscriber (Strawberry's handler)"
    return [
        f"  per-subscriber execution, for comparison: {kb:.1f} KB per idle subscription",
        rate.line(),
    ]


async def warm_up(base: str, setup: Setup) -> list[Subscriber]:
    raws = await open_many(CONNECT_CONCURRENCY, lambda i: open_raw(base, i))
    return raws + await open_many(CONNECT_CONCURRENCY, lambda i: widget(base, setup, i))


def widget(base: str, setup: Setup, index: int) -> Awaitable[Subscriber]:
    variables = {"app": str(setup.application_id), "endUser": str(setup.end_users[index])}
    return open_subscription(base, setup.tokens[index], WIDGET, variables)


def dashboard(base: str, setup: Setup) -> Awaitable[Subscriber]:
    return open_subscription(base, setup.read_key, DASHBOARD, {"app": str(setup.application_id)})


# ---------------------------------------------------------------------------- setup


async def prepare(largest: int, changes: int, admin_dsn: str, redis_url: str) -> tuple[Setup, str]:
    """A scratch database with one application of `largest` funded End Users, keys, one
    End User token each, and `changes` empty pools for the dashboard load."""
    from api.settings import Settings
    from bench.ledger import fund_application
    from models.accounts import create_api_key, create_organization
    from models.end_user_tokens import sign_token
    from models.pools import create_pool
    from models.tenancy import ApiKeyRole

    name = await create_database(admin_dsn)
    url, _ = database_urls(admin_dsn, name)
    await open_database(Settings(DATABASE_URL=url))
    organization, _ = await create_organization("ws fanout bench")
    accounts = await fund_application(organization.id, 0, largest)
    application_id = accounts[0].application_id
    for number in range(changes):
        await create_pool(application_id, dashboard_pool(number), f"Dashboard {number}")
    read = await create_api_key(organization.id, "read", ApiKeyRole.READ, application_id)
    admin = await create_api_key(organization.id, "admin", ApiKeyRole.ADMIN, application_id)
    end_users = [account.end_user_id for account in accounts]
    tokens = [sign_token(SECRET, application_id, u, 24 * 3600).token for u in end_users]
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "USAGEGRAPH_SECRET": SECRET,
        "USAGEGRAPH_DB_POOL_MIN": "5",
        "USAGEGRAPH_DB_POOL_MAX": "20",
    }
    return Setup(application_id, end_users, read.secret, admin.secret, tokens, env), name


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (or pass --redis-url)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="1000,5000", help="comma-separated N")
    parser.add_argument("--rate", type=float, default=50.0, help="widget consumptions/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="widget load duration")
    parser.add_argument("--changes", type=int, default=20, help="dashboard pool changes")
    parser.add_argument("--quick", action="store_true", help="a smoke run at a small scale")
    parser.add_argument("--per-subscriber", action="store_true", help="also Strawberry's path")
    parser.add_argument("--profile", action="store_true", help="py-spy the server's phases")
    parser.add_argument("--only", choices=["memory"], help="run this phase alone")
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN)
    parser.add_argument("--redis-url", default=None, help="default: a redis-server of its own")
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.seconds, args.changes = "200", 4.0, 5
    sizes = [int(size) for size in args.subscribers.split(",")]
    limit = raise_open_files_limit()
    if 3 * max(sizes) + 200 > limit:
        raise SystemExit(f"open-file limit {limit} is too low for {max(sizes)} subscribers")

    redis_process, redis_url = (None, args.redis_url) if args.redis_url else start_redis()
    setup, database = await prepare(max(sizes), args.changes, args.admin_dsn, redis_url)
    work = Path(tempfile.mkdtemp(prefix="ws_fanout_"))
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"ws_fanout, run of {started}; server logs and profiles in {work}")
    status = 0
    try:
        for n in sizes:
            for line in await run_size(n, setup, args, work):
                print(line, flush=True)
    except Exception as error:  # printed with what was measured so far
        print(f"FAILED: {type(error).__name__}: {error}")
        status = 1
    finally:
        from api.database import close_database

        await close_database()
        await drop_database(args.admin_dsn, database)
        if redis_process is not None:
            redis_process.terminate()
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
