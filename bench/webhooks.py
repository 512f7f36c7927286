"""Webhooks on PostgreSQL and Redis, one server process (`usagegraph serve`), a receiver in a
process of its own on loopback (answering 200 at once; the suite verifies signatures):

1. Drain: `--endpoints` endpoints (default 20) listen to `allocation.changed`; `--burst`
   allocations (default 1,000) are made as fast as 16 clients can, each one message per
   endpoint. Deliveries/s = messages / (last arrival - first answer). Target: 1,000/s.
2. Steady: allocations at `--rate` deliveries/s (default 1,000: rate / endpoints
   allocations/s) for `--seconds`; commit-to-delivery latency = arrival at the receiver -
   the allocation's answer at the client (which comes after the commit), p50 and p99.
   Target: p99 under 1 s.
3. Consume: `consumeCredits` with wrk on an application of 200 funded End Users, in
   interleaved rounds (`--rounds` x `--round-seconds`) without endpoints and with 10
   listening to every event type; the ratio of the medians. Target: within 5%.

Everything runs in a throwaway database (dropped unless --keep) and a Redis of its own.

    .venv/bin/python -m bench.webhooks [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.requests import Request

from api.settings import Settings
from bench.graphql_consume import Target, print_profile, wrk_bodies
from bench.harness import (
    DEFAULT_ADMIN_DSN,
    ROOT,
    PySpy,
    create_database,
    database_urls,
    drop_database,
    free_port,
    machine_line,
    open_database,
    percentile,
    run_wrk,
    start_server,
    usagegraph_serve,
    write_bodies,
)
from bench.ledger import fund_application
from models.accounts import create_api_key, create_application, create_organization
from models.end_users import EndUserInput, upsert_end_users
from models.ledger import purchase_credits
from models.tenancy import ApiKeyRole
from models.webhooks import WebhookEndpoint, WebhookEventType, create_endpoint

ALLOCATE = """
mutation($input: AllocateCreditsInput!) {
  allocateCredits(input: $input) { balance { allocated } errors { code } }
}"""
ALL_TYPES = [t for t in WebhookEventType if t != WebhookEventType.TEST]


# ------------------------------------------------------------------------ the receiver


class Receiver:
    """Notes each message's path, id, arrival time (time.time) and (End User, allocated);
    GET /results answers them as JSON, POST /reset forgets them."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, str, float, str | None, int | None]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await Request(scope, receive).body()
        answer = b""
        if scope["method"] == "GET":
            answer = orjson.dumps(self.arrivals)
        elif scope["path"] == "/reset":
            self.arrivals = []
        else:
            headers = dict(scope["headers"])
            data = orjson.loads(body)["data"]
            user = data.get("endUser") or {}
            self.arrivals.append(
                (
                    scope["path"],
                    headers[b"webhook-id"].decode(),
                    time.time(),
                    user.get("id"),
                    data.get("allocated"),
                )
            )
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer})


def serve_receiver(port: int) -> None:
    import uvicorn

    uvicorn.run(
        Receiver(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="httptools",
    )


@contextlib.contextmanager
def process(argv: list[str], log: Path) -> Any:
    with open(log, "wb") as out:
        popen = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=out)
    try:
        yield popen
    finally:
        popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=10)
        if popen.poll() is None:
            popen.kill()


async def answering(url: str) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                await client.get(url)
                return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing answers at {url}")


async def arrivals(receiver: str) -> list[list[Any]]:
    async with httpx.AsyncClient(timeout=60) as client:
        return orjson.loads((await client.get(f"{receiver}/results")).content)


async def wait_for_arrivals(receiver: str, count: int, patience: float) -> list[list[Any]]:
    deadline = time.monotonic() + patience
    while True:
        got = await arrivals(receiver)
        if len({(a[0], a[1]) for a in got}) >= count or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


# ------------------------------------------------------------------------ the phases


async def allocation_app(receiver: str, endpoints: int, users: int) -> tuple[str, str, list[str]]:
    """An application with credits, End Users and `endpoints` endpoints on allocations:
    its id, an ADMIN key and its End User ids."""
    organization, _ = await create_organization("bench webhooks")
    application = await create_application(organization.id, "webhooks")
    issued = await create_api_key(
        organization.id, "bench", ApiKeyRole.ADMIN, application_id=application.id
    )
    await purchase_credits(application.id, "ai", 1_000_000_000)
    made = await upsert_end_users(
        application.id, [EndUserInput(external_id=f"w{i}") for i in range(users)]
    )
    for i in range(endpoints):
        await create_endpoint(
            application.id,
            f"{receiver}/e{i}",
            [WebhookEventType.ALLOCATION_CHANGED],
            allow_private=True,
        )
    return str(application.id), issued.secret, [str(u.id) for u in made]


async def allocations(
    graphql: str, key: str, app_id: str, users: list[str], count: int, clients: int, rate: float
) -> dict[tuple[str, int], float]:
    """`count` allocations of 1 credit, round-robin over the End Users, by `clients`
    clients, at most `rate` per second (0: as fast as they go); each one's (End User,
    allocated) and the time its answer came (time.time)."""
    answered: dict[tuple[str, int], float] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    start = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                user = users[i % len(users)]
                variables = {
                    "input": {
                        "applicationId": app_id,
                        "endUser": {"id": user},
                        "pool": "ai",
                        "credits": 1,
                    }
                }
                response = await client.post(
                    graphql, json={"query": ALLOCATE, "variables": variables}
                )
                result = response.json()["data"]["allocateCredits"]
                assert not result["errors"], result
                answered[(user, result["balance"]["allocated"])] = time.time()

        await asyncio.gather(*(worker() for _ in range(clients)))
    return answered


async def drain_phase(args: argparse.Namespace, server: Any, receiver: str, app: tuple) -> None:
    app_id, key, users = app
    expected = args.burst * args.endpoints
    started = time.time()
    answered = await allocations(server.url, key, app_id, users, args.burst, 16, 0)
    allocated = time.time()
    got = await wait_for_arrivals(receiver, expected, patience=300)
    unique = {(a[0], a[1]): a for a in got}
    last = max(a[2] for a in unique.values())
    first_answer = min(answered.values())
    rate = len(unique) / (last - first_answer)
    print(
        f"drain: {args.burst:,} allocations in {allocated - started:.2f} s"
        f" ({args.burst / (allocated - started):,.0f}/s) x {args.endpoints} endpoints ="
        f" {len(unique):,} of {expected:,} messages delivered by {last - started:.2f} s:"
        f" {rate:,.0f} deliveries/s (target 1,000)",
        flush=True,
    )


async def steady_phase(args: argparse.Namespace, server: Any, receiver: str, app: tuple) -> None:
    app_id, key, users = app
    async with httpx.AsyncClient() as client:
        await client.post(f"{receiver}/reset")
    per_second = args.rate / args.endpoints
    count = int(per_second * args.seconds)
    spy = PySpy(args.profile)
    spy.start(server.pid, Path(args.work) / "steady.pyspy", args.seconds)
    answered = await allocations(server.url, key, app_id, users, count, 16, per_second)
    spy.stop()
    got = await wait_for_arrivals(receiver, count * args.endpoints, patience=120)
    first: dict[tuple[str, str], list[Any]] = {}
    for arrival in got:
        first.setdefault((arrival[0], arrival[1]), arrival)
    latencies = [a[2] - answered[(a[3], a[4])] for a in first.values() if (a[3], a[4]) in answered]
    times = [a[2] for a in first.values()]
    window = max(times) - min(times)
    print(
        f"steady: {count:,} allocations at {per_second:,.0f}/s x {args.endpoints} endpoints:"
        f" {len(first):,} of {count * args.endpoints:,} messages,"
        f" {len(first) / window:,.0f} deliveries/s; commit-to-delivery"
        f" p50 {percentile(latencies, 0.5) * 1000:.0f} ms,"
        f" p99 {percentile(latencies, 0.99) * 1000:.0f} ms,"
        f" max {max(latencies) * 1000:.0f} ms (target p99 < 1,000 ms)",
        flush=True,
    )
    if args.profile:
        print_profile(Path(args.work) / "steady.pyspy", top=40)


async def consume_phase(args: argparse.Namespace, server: Any, receiver: str, work: Path) -> None:
    """One application, its 10 endpoints created before the rounds with them and deleted
    before those without (the same End Users and rows in both)."""
    organization, _ = await create_organization("bench webhooks consume")
    accounts = await fund_application(organization.id, 0, 200)
    app_id = accounts[0].application_id
    issued = await create_api_key(organization.id, "bench", ApiKeyRole.ADMIN, application_id=app_id)
    refs = {a.end_user_id: {"externalId": f"bench-{i}"} for i, a in enumerate(accounts)}
    bodies = work / "consume.jsonl"
    write_bodies(wrk_bodies(Target(server.url, issued.secret, app_id, refs), accounts), bodies)
    configs = ("0 endpoints", "10 endpoints")
    rates: dict[str, list[float]] = {name: [] for name in configs}
    for round_number in range(args.rounds):
        for name in configs if round_number % 2 == 0 else reversed(configs):
            await WebhookEndpoint.filter(application_id=app_id).delete()
            if name == "10 endpoints":
                for i in range(10):
                    await create_endpoint(app_id, f"{receiver}/c{i}", ALL_TYPES, allow_private=True)
            output = work / f"wrk-{round_number}-{name[:2].strip()}"
            run = await run_wrk(server.url, issued.secret, bodies, 32, args.round_seconds, output)
            if run.errors:
                print(f"  {run.describe_errors()}", flush=True)
            rate = run.answered / run.seconds
            rates[name].append(rate)
            print(f"  round {round_number + 1} {name}: {rate:,.0f} consumptions/s", flush=True)
    without, with_ = (statistics.median(rates[name]) for name in configs)
    print(
        f"consume: median {without:,.0f}/s without endpoints, {with_:,.0f}/s with 10:"
        f" {(with_ / without - 1) * 100:+.1f}% (target within 5%)",
        flush=True,
    )


# ------------------------------------------------------------------------------ main


@contextlib.asynccontextmanager
async def own_redis(work: Path) -> AsyncIterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with process(argv, work / "redis.log"):
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"


async def main(args: argparse.Namespace) -> int:
    print(machine_line(), flush=True)
    name = await create_database(args.admin_dsn, "usagegraph_bench_webhooks")
    url, _ = database_urls(args.admin_dsn, name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            args.work = str(work)
            await open_database(Settings(DATABASE_URL=url))
            port = free_port()
            receiver = f"http://127.0.0.1:{port}"
            argv = [sys.executable, "-m", "bench.webhooks", "--receiver", str(port)]
            async with own_redis(work) as redis_url:
                with process(argv, work / "receiver.log"):
                    await answering(f"{receiver}/results")
                    env = {
                        "DATABASE_URL": url,
                        "REDIS_URL": redis_url,
                        "USAGEGRAPH_WEBHOOKS_ALLOW_PRIVATE": "1",
                        "USAGEGRAPH_RATE_LIMIT_PER_SECOND": "0",
                        "USAGEGRAPH_LOG_LEVEL": "WARNING",
                    }
                    server = start_server(usagegraph_serve, env, work)
                    try:
                        app = await allocation_app(receiver, args.endpoints, 50)
                        await server.ready(app[1])
                        if args.only in (None, "delivery"):
                            await drain_phase(args, server, receiver, app)
                            await steady_phase(args, server, receiver, app)
                        if args.only in (None, "consume"):
                            await consume_phase(args, server, receiver, work)
                    finally:
                        server.stop()
    finally:
        from api.database import close_database

        await close_database()
        if not args.keep:
            await drop_database(args.admin_dsn, name)
        else:
            print(f"kept database {name}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small scale, to check it runs")
    parser.add_argument("--only", choices=["delivery", "consume"])
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--burst", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=1_000.0, help="deliveries/s (steady)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--round-seconds", type=float, default=10.0)
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy the server (steady)")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.burst, args.seconds, args.rounds, args.round_seconds = 200, 5.0, 2, 3.0
    return args


def run() -> int:
    args = parse_args()
    if args.receiver is not None:
        serve_receiver(args.receiver)
        return 0
    os.environ.setdefault("USAGEGRAPH_LOG_LEVEL", "WARNING")
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(run())
