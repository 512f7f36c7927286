"""`consumeCredits` over HTTP against one `usagegraph serve` process on PostgreSQL, beside
the same ledger SQL run by raw asyncpg loops in the same run.

What it measures
    consumeCredits: `--clients` concurrent HTTP clients (default 64; httpx clients, or wrk's
    connections with `--load wrk`, see below) each POSTing
    `consumeCredits` of 1 credit for a random End User of `--end-users` (default 1,000),
    waiting for the answer before the next. The mutation text is fixed and every value is
    in `variables` (the server caches parsed and validated documents by their text). The
    selection is the README's, `balance { remaining status version } replayed errors { code
    message }` (`lowBalanceThreshold` would add two reads per request).
    consumeCreditsBatch: `--batch-size` (default 100) consumptions of distinct random End
    Users per request, at each concurrency of `--batch-clients` (default 8 and 64: 8 keeps
    about as many consumptions in flight as 64 single clients would batch together, 64 is
    the single phase's concurrency); its rate is consumptions per second (batch size x
    requests per second).
    Raw baselines (`bench.ledger`'s raw paths, `--clients` asyncio tasks on a plain
    asyncpg pool): "raw single", one transaction per consumption with exactly the statements
    the ledger sends for a consumption made alone, the rate the targets refer to; and "raw
    combined", the server's per-application combiner (concurrent single consumptions queue
    while a batch commits) in plain asyncpg, i.e. the same transactions the server runs for
    `consumeCredits` under load, for seeing what HTTP, GraphQL and the ORM cost on top.
    Each runs once before the HTTP phases and once after; the mean of the two counts.
    Every phase has a warm-up (`--warmup`, default 2 s) and a measured window (`--seconds`,
    default 10 s): rates count what completed in the window; p50/p99 are the latencies of
    those calls as the caller saw them. Every HTTP answer must be 200 with no GraphQL error
    and no error in the payload (or in any batch item); anything else is counted and printed.
    For each window it reads the CPU seconds used by the server process (/proc/<pid>/stat
    utime+stime), by this (client) process, by every `postgres` process and by the whole
    machine, to show which is the bottleneck; and the database transactions that wrote the
    phase's consumptions (pool balance events: one per transaction).
    `--against DIR` replaces all of the above with interleaved rounds of consumeCredits
    (wrk at `--clients`, `--rounds` of `--seconds`, each on a server started for it after
    `--warmup`) of this checkout's server and the server of the checkout DIR (with its own
    `.venv`), one server at a time: the medians of the rates, the p99 and the server's and
    PostgreSQL's CPU a request, with their ratios; then `verify_ledger()`.

Setup
    A scratch database on `--admin-dsn` (default postgresql://postgres@127.0.0.1:5432/test,
    or $USAGEGRAPH_BENCH_PG / $USAGEGRAPH_TEST_PG), migrated, with one organization, one
    application, an application ADMIN API key and `--end-users` End Users each allocated an
    equal share of 10^9 credits (`bench.ledger`'s `fund`, through the model functions).
    The server is `usagegraph serve --port <free port>`, with DATABASE_URL and
    USAGEGRAPH_DB_POOL_MIN/MAX set to `--pool-size` (default 40) and this checkout first on
    PYTHONPATH; the raw pools have the same size. PostgreSQL allows 100 connections, shared
    with whatever else runs on the machine: the server runs only between the raw phases, so
    that no two pools are open together, and each pool waits for enough free connections
    before it opens. Before the HTTP phases every End User consumes once over HTTP, so that
    the server has its pool and End User ids cached, as a long-running server would.
    The clients are `httpx.AsyncClient`s with keep-alive, one per concurrent client with one
    connection each; `--shared-client` uses one client with `max_connections` = clients
    instead (the same connections, but httpcore's pool then scans every connection for each
    request, which costs the client process ms of CPU per request at 64).
    At the end the rows written are checked against the consumptions completed (usage
    events = CONSUME entries = End User balance events), `verify_ledger()` recomputes every
    counter from the ledger, the server is stopped and the database dropped.

Load generator (`--load`)
    httpx (default): the consumeCredits phase runs on this process's httpx clients, as above.
    They cost a good part of a core at 64 clients, which on a small machine the server and
    PostgreSQL then lack, so the server's latency is inflated by its own load generator.
    wrk: the consumeCredits phase is driven by wrk (a C load generator; exit status 2 if
    `wrk` is not on PATH) instead: a warm-up run of `--warmup` s, then the measured run,
    `wrk -t<--wrk-threads, default 1> -c<--clients> -d<--seconds>s --timeout 60s --latency
    -s bench/wrk_post.lua <server>/graphql`. One thread is plenty: wrk's CPU per request is
    a small fraction of the server's (the table's client column shows it). It POSTs the same
    fixed mutation with the same variables (the bodies, one per End User, are written by
    this script to a file in the work directory and passed with the key in environment
    variables; `bench/wrk_post.lua`), with `Content-Type: application/json` and
    `Authorization: Bearer <key>`, for a random End User per request. Its `response` hook
    counts answers that are not 200 and bodies holding a non-empty `errors` list
    (`"errors":[{`, GraphQL's or the payload's) or `"balance":null`; `--wrk-check-every n`
    checks every n-th body only (1, every body, is the default: the hook costs wrk no
    measurable CPU at this rate) and 0 drops the hook (then only statuses > 399 are seen).
    Its `done` hook prints wrk's totals, error counts and latency percentiles in one
    `WRK_RESULT key=value ...` line, which this script parses. The phase (labelled
    `consumeCredits [wrk -t1]`) reports the same columns: rate = successful answers in the
    measured run / its duration, p50/p99 from wrk's latency distribution (the latency of
    every answer of the run), and CPU over the measured run, where "client" is wrk's CPU
    (wait4 of the wrk process) plus this process's (idle meanwhile). The summary's target
    verdicts then use this phase, and say which load generator ran it. The other phases
    (prewarm, batches, raw) are unchanged.
    wrk drops the requests in flight when a run ends (up to `--clients` per run), which the
    server still commits. So the phase's consumptions, for the row check, are the usage
    events written from the warm-up's start until the row counts stay unchanged for 1 s
    after the measured run (any later commit would then show as a row MISMATCH); and these
    are checked against wrk's successful answers: answered <= committed <= answered +
    clients per run + failed answers, else the run fails.

Run it from the project root:

    .venv/bin/python -m bench.graphql_consume [--seconds 10] [--clients 64]
        [--end-users 1000] [--load httpx|wrk] [--quick]

`--quick` (200 End Users, 3 s windows, one batch concurrency) checks that everything runs.

`--profile` samples the server with py-spy during each HTTP window and prints where its CPU
went, by library, by stage and by function (install py-spy first:
`.venv/bin/pip install py-spy`). `usagegraph serve` runs uvicorn at log level INFO with its
access log, a line per request; `--no-access-log` runs `usagegraph serve --no-access-log`,
to measure what the log costs. `--server-cmd` starts any other command instead (for
experiments such as a patched launcher; `{port}` and `{python}` are filled in).

The server and this process import the checkout the command runs in (it goes first on
PYTHONPATH), so `python -m bench.graphql_consume` run from the root of a copy of the project,
e.g. `git archive HEAD | tar -x -C /tmp/copy`, benchmarks that copy with the same
virtualenv.

Exit status: 1 when an HTTP answer was wrong, the rows written do not match the
consumptions completed (or, with `--load wrk`, wrk's answers), or `verify_ledger()` reports
a problem; 2 when `--load wrk` is given and wrk is not installed; else 0. Missed targets are
printed, not reflected in the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from tortoise import connections

from api.database import close_database
from api.settings import Settings
from bench.harness import (
    DEFAULT_ADMIN_DSN,
    ROOT,
    CpuSnapshot,
    CpuUse,
    PySpy,
    Server,
    WrkRun,
    against_arguments,
    checkout_python,
    closed_loop,
    create_database,
    database_urls,
    drop_database,
    find_wrk,
    measured_round,
    open_database,
    percentile,
    print_comparison,
    rates_line,
    run_wrk,
    start_server,
    until,
    usagegraph_serve,
    wait_for_connections,
    write_bodies,
    wrk_load,
)
from bench.ledger import (
    CREDITS,
    FEATURE,
    POOL_KEY,
    Account,
    fund,
    raw_combined,
    raw_pool,
    raw_single,
)
from models.accounts import create_api_key
from models.credits import EndUser
from models.tenancy import ApiKeyRole, Application
from models.verify import verify_ledger

TARGET_RATIO = 0.35  # HTTP consumeCredits rate / raw rate
TARGET_P99_MS = 150.0
TARGET_BATCH_RATIO = 1.0  # batch consumptions/s / raw single-transaction rate

CONSUME = """mutation Consume($input: ConsumeCreditsInput!) {
  consumeCredits(input: $input) {
    balance { remaining status version } replayed errors { code message }
  }
}"""
CONSUME_BATCH = """mutation ConsumeMany($input: ConsumeCreditsBatchInput!) {
  consumeCreditsBatch(input: $input) {
    results { balance { remaining } replayed errors { code message } } errors { code message }
  }
}"""
READY = "query Ready { __typename }"

# ------------------------------------------------------------------------------ phases


@dataclass
class Phase:
    """One measured phase. A call is one HTTP request or one raw consumption; a call of a
    batch phase holds `per_call` consumptions."""

    label: str
    concurrency: int
    per_call: int
    seconds: float
    completed: int = 0  # calls completed in the measured window
    total: int = 0  # calls completed in the whole phase (warm-up included)
    errors: int = 0
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list)
    cpu: CpuUse | None = None
    profile: Path | None = None
    transactions: int | None = None  # transactions that wrote the phase's consumptions
    # Latencies (ms by quantile) of a phase whose calls this process did not time (wrk's).
    quantiles: dict[float, float] | None = None
    wrk: WrkPhase | None = None

    @property
    def calls_per_second(self) -> float:
        return self.completed / self.seconds

    @property
    def consumptions_per_second(self) -> float:
        return self.calls_per_second * self.per_call

    @property
    def consumptions_total(self) -> int:
        return self.total * self.per_call

    def percentile(self, q: float) -> float:
        """Latency at quantile q, in ms."""
        if self.quantiles is not None:
            return self.quantiles.get(q, float("nan"))
        return percentile(self.latencies, q) * 1000


def profile_file(work_dir: Path, label: str, concurrency: int) -> Path:
    return work_dir / ("".join(c if c.isalnum() else "_" for c in label) + f"_x{concurrency}.txt")


async def run_phase(
    label: str,
    consume: Callable[[Account], Awaitable[Any]],
    accounts: list[Account],
    concurrency: int,
    per_call: int,
    args: argparse.Namespace,
    server_pid: int | None = None,
    profiler: PySpy | None = None,
) -> Phase:
    """`concurrency` tasks calling `consume(random End User)` until the window closes, with
    the CPU of every party read at the window's ends and, given a profiler, the server
    sampled during the window."""
    phase = Phase(label, concurrency, per_call, args.seconds)
    before = await consumption_rows()

    async def meter(start: float, end: float) -> None:
        await until(start)
        first = CpuSnapshot.take(server_pid)
        if profiler is not None and server_pid is not None:
            phase.profile = profile_file(args.work_dir, label, concurrency)
            profiler.start(server_pid, phase.profile, args.seconds)
        await until(end)
        phase.cpu = CpuUse.between(first, CpuSnapshot.take(server_pid))

    loop = await closed_loop(
        consume, accounts, concurrency, args.warmup, args.seconds, args.seed, meter
    )
    phase.completed, phase.total, phase.latencies = loop.completed, loop.total, loop.latencies
    phase.errors, phase.first_error = loop.errors, loop.first_error
    if profiler is not None:
        await asyncio.to_thread(profiler.stop)
    phase.transactions = (await consumption_rows())["transactions"] - before["transactions"]
    return phase


async def raw_phase(
    label: str, dsn: str, accounts: list[Account], args: argparse.Namespace
) -> Phase:
    """A raw baseline of `bench.ledger` on an asyncpg pool of `--pool-size`: "raw single"
    (one transaction per consumption, `raw_single`) or "raw combined" (the server's
    combiner in plain asyncpg, `raw_combined`)."""
    await wait_for_connections(args.admin_dsn, args.pool_size + 1)
    pool = await raw_pool(dsn, args.pool_size)
    try:
        if label.startswith("raw single"):

            def consume(account: Account) -> Awaitable[None]:
                return raw_single(pool, account)

        else:
            consume = raw_combined(pool)
        return await run_phase(label, consume, accounts, args.clients, 1, args)
    finally:
        await pool.close()


# -------------------------------------------------------------------------- HTTP client


class AnswerError(Exception):
    """An HTTP answer that is not a successful consumption."""


@dataclass
class Target:
    url: str
    api_key: str
    application_id: int
    refs: dict[int, dict[str, str]]  # End User id -> its EndUserRef input

    def consumption(self, account: Account) -> dict[str, Any]:
        return {
            "endUser": self.refs[account.end_user_id],
            "pool": POOL_KEY,
            "credits": CREDITS,
            "feature": FEATURE,
        }


class Clients:
    """`count` concurrent HTTP clients with keep-alive. By default each is its own
    `httpx.AsyncClient` holding one connection: httpcore's pool scans every connection for
    each request it places (`_assign_requests_to_connections`), which costs a shared client
    of 64 connections several ms of CPU per request. `shared` uses one client with
    `max_connections=count` instead (the same connections on the wire)."""

    def __init__(self, target: Target, count: int, shared: bool) -> None:
        self.target = target

        def make(connections: int) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                headers={"Authorization": f"Bearer {target.api_key}"},
                limits=httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                ),
                timeout=httpx.Timeout(60.0),
            )

        if shared:
            self.unique = [make(count)]
            self.free = self.unique * count
        else:
            self.unique = [make(1) for _ in range(count)]
            self.free = list(self.unique)

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *_: object) -> None:
        for client in self.unique:
            await client.aclose()

    async def post(self, query: str, variables: dict[str, Any]) -> Any:
        """The `data` of a 200 answer without GraphQL errors, else AnswerError."""
        client = self.free.pop()  # there are as many clients as tasks using them
        try:
            response = await client.post(
                self.target.url, json={"query": query, "variables": variables}
            )
        finally:
            self.free.append(client)
        if response.status_code != 200:
            raise AnswerError(f"HTTP {response.status_code}: {response.text[:300]}")
        body = response.json()
        if body.get("errors"):
            raise AnswerError(f"GraphQL errors: {body['errors']}"[:300])
        return body["data"]


def single_consumer(clients: Clients) -> Callable[[Account], Awaitable[None]]:
    target = clients.target

    async def consume(account: Account) -> None:
        variables = {
            "input": {"applicationId": str(target.application_id), **target.consumption(account)}
        }
        payload = (await clients.post(CONSUME, variables))["consumeCredits"]
        if payload["errors"] or payload["balance"] is None:
            raise AnswerError(f"payload errors: {payload['errors']}"[:300])

    return consume


def batch_consumer(
    clients: Clients, accounts: list[Account], size: int, seed: int
) -> Callable[[Account], Awaitable[None]]:
    target = clients.target
    rng = random.Random(seed)

    async def consume(_: Account) -> None:
        picked = rng.sample(accounts, size)  # distinct End Users, random order
        variables = {
            "input": {
                "applicationId": str(target.application_id),
                "consumptions": [target.consumption(account) for account in picked],
            }
        }
        payload = (await clients.post(CONSUME_BATCH, variables))["consumeCreditsBatch"]
        if payload["errors"]:
            raise AnswerError(f"payload errors: {payload['errors']}"[:300])
        results = payload["results"]
        if len(results) != size:
            raise AnswerError(f"{len(results)} results for {size} consumptions")
        for result in results:
            if result["errors"] or result["balance"] is None:
                raise AnswerError(f"item errors: {result['errors']}"[:300])

    return consume


async def prewarm(clients: Clients, accounts: list[Account], concurrency: int) -> int:
    """One consumption per End User over HTTP: fills the server's reference caches and opens
    its pool's connections. Answers the consumptions made."""
    queue = list(accounts)
    consume = single_consumer(clients)

    async def worker() -> None:
        while queue:
            await consume(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(accounts)


# ---------------------------------------------------------------------------- wrk load


@dataclass
class WrkPhase:
    warmup: WrkRun | None
    window: WrkRun
    threads: int
    check_every: int
    rows: int  # consumptions committed from the start of the warm-up until the rows settled
    settle: float  # seconds waited after the window for the server's last commits

    @property
    def runs(self) -> list[WrkRun]:
        return [run for run in (self.warmup, self.window) if run is not None]

    @property
    def answered(self) -> int:
        return sum(run.answered for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    @property
    def unanswered(self) -> int:
        """Consumptions committed without a successful answer counted by wrk: those in
        flight when a run stopped (wrk drops them), at most `connections` per run."""
        return self.rows - self.answered


def wrk_bodies(target: Target, accounts: list[Account]) -> list[dict[str, Any]]:
    """One request body per End User, the same mutation text and variables the httpx
    clients send."""
    return [
        {
            "query": CONSUME,
            "variables": {
                "input": {"applicationId": str(target.application_id), **target.consumption(a)}
            },
        }
        for a in accounts
    ]


async def wrk_phase(
    target: Target,
    accounts: list[Account],
    args: argparse.Namespace,
    server_pid: int,
    work_dir: Path,
    profiler: PySpy | None = None,
) -> Phase:
    """consumeCredits driven by wrk: a warm-up run of `--warmup` s, then the measured run of
    `--seconds` s, with the CPU of every party read at the measured run's ends (the client
    is wrk, plus this process, idle meanwhile). wrk drops the requests in flight when a run
    ends; the server still commits them, so the phase's consumptions are the rows written
    from the warm-up's start until they stop changing."""
    label = f"consumeCredits [wrk -t{args.wrk_threads}]"
    bodies = work_dir / "wrk_bodies.jsonl"
    write_bodies(wrk_bodies(target, accounts), bodies)

    async def wrk(seconds: float, out: str) -> WrkRun:
        return await run_wrk(
            target.url,
            target.api_key,
            bodies,
            args.clients,
            seconds,
            work_dir / out,
            threads=args.wrk_threads,
            check_every=args.wrk_check_every,
            seed=args.seed,
        )

    before = await consumption_rows()
    warmup = await wrk(args.warmup, "wrk_warmup.txt") if args.warmup > 0 else None
    first = CpuSnapshot.take(server_pid)
    profile = None
    if profiler is not None:
        profile = work_dir / "consumeCredits_wrk.txt"
        profiler.start(server_pid, profile, args.seconds)
    window = await wrk(args.seconds, "wrk_window.txt")
    cpu = CpuUse.between(first, CpuSnapshot.take(server_pid))
    if profiler is not None:
        await asyncio.to_thread(profiler.stop)
    # The requests wrk dropped at its stop are still running in the server: wait until the
    # rows stop changing (the server answers within a second at this load).
    settled = time.perf_counter()
    rows, steady = await consumption_rows(), 0
    while steady < 2 and time.perf_counter() - settled < 30:  # unchanged for 1 s
        await asyncio.sleep(0.5)
        again = await consumption_rows()
        steady = steady + 1 if again == rows else 0
        rows = again
    info = WrkPhase(
        warmup,
        window,
        args.wrk_threads,
        args.wrk_check_every,
        rows["usage_event"] - before["usage_event"],
        time.perf_counter() - settled,
    )
    r = window.result
    phase = Phase(label, args.clients, 1, r["duration_us"] / 1e6)
    phase.completed = window.answered
    phase.total = info.rows
    phase.errors = info.errors
    if phase.errors:
        phase.first_error = "; ".join(run.describe_errors() for run in info.runs if run.errors)
    phase.quantiles = {0.5: r["p50_us"] / 1000, 0.9: r["p90_us"] / 1000, 0.99: r["p99_us"] / 1000}
    phase.cpu = dataclasses.replace(cpu, client=cpu.client + window.cpu)
    phase.profile = profile
    phase.transactions = rows["transactions"] - before["transactions"]
    phase.wrk = info
    return phase


# ------------------------------------------------------------------------------ server


def server_command(
    access_log: bool, template: str | None, python: str = sys.executable
) -> Callable[[int], list[str]]:
    """`usagegraph serve` run by `python`, or the `--server-cmd` template ({port},
    {python})."""
    if template is not None:
        return lambda port: shlex.split(template.format(port=port, python=python))
    return lambda port: usagegraph_serve(port, access_log=access_log, python=python)


async def start_usagegraph(
    url: str,
    pool_size: int,
    access_log: bool,
    template: str | None,
    log_dir: Path,
    key: str,
    settings: dict[str, str] | None = None,
    checkout: Path = ROOT,
) -> Server:
    """One server process on the database with a pool of `pool_size`, answering `key`,
    with other `settings` (environment variables) given; of this checkout, or of another
    one with a virtual environment of its own in `.venv`."""
    env = {
        "DATABASE_URL": url,
        "USAGEGRAPH_DB_POOL_MIN": str(pool_size),
        "USAGEGRAPH_DB_POOL_MAX": str(pool_size),
        **(settings or {}),
    }
    command = server_command(access_log, template, checkout_python(checkout))
    server = start_server(command, env, log_dir, cwd=checkout, checkout=checkout)
    try:
        await server.ready(key)
    except RuntimeError as error:
        raise RuntimeError(f"{error}\n{server.tail()}") from error
    return server


# ------------------------------------------------------------------------------- setup


async def seed(end_users: int) -> tuple[list[Account], int, str, dict[int, dict[str, str]]]:
    """Funded End Users (`bench.ledger`), an application ADMIN key and each End User's
    reference as sent in the mutation."""
    accounts = await fund(end_users, 1)
    application_id = accounts[0].application_id
    application = await Application.get(id=application_id)
    issued = await create_api_key(
        application.organization_id,  # type: ignore[attr-defined]
        "bench key",
        ApiKeyRole.ADMIN,
        application_id=application_id,
    )
    rows = await EndUser.filter(application_id=application_id).values_list("id", "external_id")
    refs = {end_user_id: {"externalId": external_id} for end_user_id, external_id in rows}
    return accounts, application_id, issued.secret, refs


async def clear_outbox() -> None:
    conn = connections.get("default")
    await conn.execute_script("DELETE FROM outbox_event")
    await conn.execute_script("VACUUM ANALYZE outbox_event")  # not in the DELETE's transaction


async def consumption_rows() -> dict[str, int]:
    """Rows written by consumptions: one usage event and one CONSUME entry (one lot) each;
    transactions counted by their distinct `now()`; outbox rows not yet published (the relay
    deletes each row once it has published it: the event rules are tested in the suite)."""
    conn = connections.get("default")
    rows = await conn.execute_query_dict(
        "SELECT (SELECT count(*) FROM usage_event) AS usage_event,"
        " count(*) AS ledger_entry, count(DISTINCT created_at) AS transactions,"
        " (SELECT count(*) FROM outbox_event) AS unpublished"
        " FROM ledger_entry WHERE kind = 'CONSUME'"
    )
    return {key: int(value) for key, value in rows[0].items()}


# ------------------------------------------------------------------------------ report


AREAS = (
    ("strawberry", "strawberry/"),
    ("graphql-core", "graphql/"),
    ("tortoise/pypika", "tortoise/"),
    ("tortoise/pypika", "pypika"),
    ("asyncpg", "asyncpg/"),
    ("uvicorn/httptools", "uvicorn/"),
    ("uvicorn/httptools", "httptools/"),
    ("starlette", "starlette/"),
    ("httpx/httpcore/anyio", "httpx/"),
    ("httpx/httpcore/anyio", "httpcore/"),
    ("httpx/httpcore/anyio", "anyio/"),
    ("pydantic", "pydantic"),
    ("logging", "logging/"),
    ("json", "json/"),
    # uvloop's C loop shows as the frame that started it (asyncio.Runner.run)
    ("event loop (uvloop/asyncio, C)", "asyncio/"),
    ("event loop (uvloop/asyncio, C)", "uvloop/"),
)
# Inclusive shares of the stages a request goes through (a sample can count in several).
STAGES = (
    ("GraphQL parse", ("(graphql/language/parser",)),
    (
        "GraphQL validation (graphql-core validate + strawberry validators)",
        ("(graphql/validation/", "query_depth_limiter", "max_aliases"),
    ),
    ("GraphQL execution (graphql-core execute, all resolvers)", ("(graphql/execution/",)),
    ("our resolvers (resolvers/)", ("(resolvers/",)),
    ("our ledger (models/)", ("(models/",)),
    ("our auth (api/auth.py, models/accounts.py)", ("(api/auth.py", "(models/accounts.py")),
    ("Tortoise (tortoise/, pypika)", ("(tortoise/", "(pypika")),
    ("asyncpg (Python part; its Cython protocol counts as event loop)", ("(asyncpg/",)),
    ("uvicorn access log (logging)", ("(logging/",)),
)
OUTSIDE_APP = (
    "outside a request's stack (uvicorn/httptools, event loop, asyncpg protocol, tasks such as"
    " the consumption combiner's)"
)
# Frames every sample has (process start-up, the loop, uvicorn, Starlette's routing).
ROOT_FRAMES = ("(typer/", "(usagegraph:", "(api/cli.py", "(uvicorn/", "(starlette/", "(asyncio/")


def _area(frames: list[str]) -> str:
    """The library (or our package) of a stack's top frame, `function (path:line)`; code
    compiled from a string (graphql-core's visitor lambdas, dataclass methods) counts for
    the frame that called it."""
    for frame in reversed(frames):
        path = frame[frame.rfind("(") + 1 :]
        if path.startswith("<"):
            continue
        for name, marker in AREAS:
            if marker in path:
                return name
        if path.startswith(("api/", "models/", "resolvers/", "subscriptions/")):
            return "usagegraph (api/models/resolvers)"
        return "other (stdlib)"
    return "other (stdlib)"


def _label(frames: list[str]) -> str:
    """The top frame, naming its caller when it is code compiled from a string."""
    if frames[-1].endswith("(<string>:1)") or "(<string>:" in frames[-1]:
        callers = [f for f in frames[:-1] if "(<string>:" not in f]
        if callers:
            return f"{frames[-1]} called by {callers[-1]}"
    return frames[-1]


def print_profile(path: Path, top: int = 25) -> None:
    """Self and inclusive samples by function, by library and by stage, from py-spy's raw
    output (one line per distinct stack: `frame;frame;... count`)."""
    self_by_frame: Counter[str] = Counter()
    incl_by_frame: Counter[str] = Counter()
    self_by_area: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_by_frame[_label(frames)] += count
        self_by_area[_area(frames)] += count
        for frame in set(frames):
            if not any(marker in frame for marker in ROOT_FRAMES):
                incl_by_frame[frame] += count
        for stage, markers in STAGES:
            if any(marker in frame for frame in frames for marker in markers):
                by_stage[stage] += count
        if not any("(starlette/" in frame for frame in frames):
            by_stage[OUTSIDE_APP] += count
    if not total:
        print(f"  no samples in {path}")
        return
    print(f"  {total} samples (py-spy, on-CPU only; {path})")
    print("  by library, self time (where the CPU was):")
    for area, count in self_by_area.most_common():
        print(f"    {count / total:6.1%}  {area}")
    print("  by stage, inclusive (what the CPU was spent for; a sample can count twice):")
    for stage in (*(name for name, _ in STAGES), OUTSIDE_APP):
        print(f"    {by_stage[stage] / total:6.1%}  {stage}")
    print(f"  top {top} functions by self time:")
    for frame, count in self_by_frame.most_common(top):
        print(f"    {count / total:6.1%}  {_short_frame(frame)}")
    print(f"  top {top} functions by inclusive time (below Starlette's routing):")
    for frame, count in incl_by_frame.most_common(top):
        print(f"    {count / total:6.1%}  {_short_frame(frame)}")


def _short_frame(frame: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3.11/"):
        at = frame.find(marker)
        if at >= 0:
            frame = frame[: frame.rfind("(") + 1] + frame[at + len(marker) :]
    return frame if len(frame) <= 160 else frame[:157] + "..."


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(phases: list[Phase]) -> None:
    header = (
        f"{'phase':<26}{'conc':>5}{'calls/s':>9}{'cons/s':>9}{'calls':>7}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'cons/tx':>8}{'server':>8}{'srv ms/call':>12}{'client':>8}"
        f"{'postgres':>9}{'machine':>9}{'others':>8}"
    )
    print(header)
    print("-" * len(header))
    for p in phases:
        cpu = p.cpu
        server = cpu.server if cpu is not None else None
        per_tx = p.consumptions_total / p.transactions if p.transactions else None
        print(
            f"{p.label:<26}{p.concurrency:>5}{p.calls_per_second:>9.1f}"
            f"{p.consumptions_per_second:>9.1f}{p.completed:>7}{p.percentile(0.5):>8.1f}"
            f"{p.percentile(0.99):>8.1f}{_fmt(per_tx, '.1f'):>8}"
            f"{_fmt(server / cpu.wall if cpu and server is not None else None, '.2f'):>8}"
            f"{_fmt(server / p.completed * 1000 if server and p.completed else None, '.2f'):>12}"
            f"{_fmt(cpu.client / cpu.wall if cpu else None, '.2f'):>8}"
            f"{_fmt(cpu.postgres / cpu.wall if cpu else None, '.2f'):>9}"
            f"{_fmt(cpu.machine_cores if cpu else None, '.2f'):>9}"
            f"{_fmt(cpu.others if cpu else None, '.2f'):>8}"
            + (f"   errors {p.errors}: {p.first_error}" if p.errors else "")
        )
    print(
        "  conc: concurrent clients (tasks); calls/s: requests (raw: consumptions) per second;"
        " cons/s: consumptions per second;\n"
        "  p50/p99: latency per call as the caller saw it; cons/tx: consumptions per database"
        " transaction (warm-up included);\n"
        "  server, client, postgres, machine: CPU cores busy on average in the window (server:"
        " the uvicorn process, client: this\n"
        "  process, plus wrk in a [wrk] phase, postgres: every postgres process on the machine,"
        f" machine: all {os.cpu_count()} CPUs,\n"
        "  others: machine - server - client - postgres, i.e. other processes, py-spy and the"
        " kernel); srv ms/call: server CPU ms per request;\n"
        "  a [wrk] phase's calls/s and p50/p99 are wrk's: successful answers over its run's"
        " duration, its latency distribution"
    )


def _verdict(ok: bool, good: str, bad: str) -> str:
    return good if ok else bad


def print_summary(
    args: argparse.Namespace,
    raw_single_runs: list[Phase],
    raw_combined_runs: list[Phase],
    single: Phase,
    batches: list[Phase],
) -> None:
    raw_rate = statistics.fmean(p.consumptions_per_second for p in raw_single_runs)
    combined_rate = statistics.fmean(p.consumptions_per_second for p in raw_combined_runs)
    print(
        f"raw single   (one transaction per consumption; mean of before/after):"
        f" {raw_rate:.1f} consumptions/s"
        f" ({', '.join(f'{p.consumptions_per_second:.1f}' for p in raw_single_runs)})"
    )
    print(
        f"raw combined (the server's combiner in plain asyncpg; mean of before/after):"
        f" {combined_rate:.1f} consumptions/s"
        f" ({', '.join(f'{p.consumptions_per_second:.1f}' for p in raw_combined_runs)})"
    )
    rate, p99 = single.consumptions_per_second, single.percentile(0.99)
    ratio = rate / raw_rate if raw_rate else float("nan")
    if single.wrk is None:
        generator = "load generator: httpx in this process"
    else:
        generator = f"load generator: wrk -t{single.wrk.threads} -c{single.concurrency}"
    print(
        f"consumeCredits over HTTP, {single.concurrency} clients ({generator}):"
        f" {rate:.1f} consumptions/s, p50 {single.percentile(0.5):.1f} ms,"
        f" p99 {p99:.1f} ms ({single.completed} measured)"
    )
    if single.wrk is not None and single.cpu is not None:
        info, cpu = single.wrk, single.cpu
        print(
            f"  wrk used {info.window.cpu:.2f} s of CPU in {cpu.wall:.1f} s ="
            f" {info.window.cpu / cpu.wall:.2f} of one core"
            f" ({info.window.result['requests'] / cpu.wall:.0f} requests/s;"
            f" p90 {single.percentile(0.9):.1f} ms, max"
            f" {info.window.result['max_us'] / 1000:.1f} ms)"
        )
    print(
        f"  rate / raw single {ratio:.1%}: "
        + _verdict(ratio >= TARGET_RATIO, "meets", "BELOW")
        + f" the {TARGET_RATIO:.0%} target"
        + (f" (rate / raw combined {rate / combined_rate:.1%})" if combined_rate else "")
    )
    print(
        f"  p99 {p99:.1f} ms: "
        + _verdict(p99 < TARGET_P99_MS, "meets", "ABOVE")
        + f" the < {TARGET_P99_MS:.0f} ms target"
    )
    for batch in batches:
        batch_ratio = batch.consumptions_per_second / raw_rate if raw_rate else float("nan")
        print(
            f"consumeCreditsBatch({batch.per_call}), {batch.concurrency} clients:"
            f" {batch.consumptions_per_second:.1f} consumptions/s"
            f" ({batch.calls_per_second:.1f} requests/s, request p50"
            f" {batch.percentile(0.5):.1f} ms, p99 {batch.percentile(0.99):.1f} ms)"
        )
        print(
            f"  = {batch_ratio:.2f}x the raw single-transaction rate: "
            + _verdict(batch_ratio >= TARGET_BATCH_RATIO, "meets", "BELOW")
            + f" the {TARGET_BATCH_RATIO:.1f}x target"
        )
    for p in (single, *batches):
        if p.cpu is None or p.cpu.server is None:
            continue
        cores = p.cpu.server / p.cpu.wall
        print(
            f"server CPU during {p.label} x{p.concurrency}: {p.cpu.server:.2f} s in"
            f" {p.cpu.wall:.1f} s = {cores:.2f} of one core"
            f" ({p.cpu.server / max(1, p.completed) * 1000:.2f} ms per request;"
            f" machine {p.cpu.machine_cores:.2f} of {os.cpu_count()} cores busy) -> "
            + _verdict(
                cores >= 0.9,
                "the server is CPU bound",
                "the server is not CPU bound"
                + (
                    " (the machine is)"
                    if p.cpu.machine_cores >= 0.9 * (os.cpu_count() or 1)
                    else ""
                ),
            )
        )


# -------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each window")
    parser.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients")
    parser.add_argument("--end-users", type=int, default=1_000, help="End Users drawn from")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=40,
        help="server pool (USAGEGRAPH_DB_POOL_MIN/MAX) and raw pool size",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="consumptions per batch")
    parser.add_argument(
        "--batch-clients",
        default="8,64",
        help="comma-separated concurrencies of the batch phases ('' for none)",
    )
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="`usagegraph serve --no-access-log`: uvicorn's access log off",
    )
    parser.add_argument(
        "--server-cmd",
        default=None,
        help="for experiments: the server command instead of `usagegraph serve`, with {port}"
        " and {python} placeholders (run from the project root, same environment)",
    )
    parser.add_argument(
        "--shared-client",
        action="store_true",
        help="one httpx.AsyncClient with max_connections=clients instead of one per client",
    )
    parser.add_argument(
        "--load",
        choices=("httpx", "wrk"),
        default="httpx",
        help="load generator of the consumeCredits phase: this process's httpx clients, or"
        " wrk (a C load generator using far less CPU; bench/wrk_post.lua)",
    )
    parser.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads (-t) with --load wrk; the --clients connections are spread over them",
    )
    parser.add_argument(
        "--wrk-check-every",
        type=int,
        default=1,
        help="with --load wrk: check the body of every n-th answer for errors (every answer's"
        " status is checked); 0: no response hook (only statuses > 399 are seen)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy during each HTTP window and print where its CPU"
        " went (needs `.venv/bin/pip install py-spy`)",
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of this process (the server uses uvloop)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small and short: checks it runs")
    parser.add_argument(
        "--admin-dsn",
        default=DEFAULT_ADMIN_DSN,
        help="server and database to create the scratch database from",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    against_arguments(parser, "consumeCredits (wrk; nothing else runs)", 6)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.end_users, args.batch_clients = 3.0, 1.0, 200, "8"
    args.batch_clients = [int(c) for c in args.batch_clients.split(",") if c.strip()]
    if min(args.clients, args.end_users, args.pool_size, args.batch_size, *args.batch_clients) < 1:
        parser.error("clients, end-users, pool-size and batch figures must be positive")
    if args.wrk_threads < 1 or args.wrk_threads > args.clients or args.wrk_check_every < 0:
        parser.error("wrk-threads must be 1 to clients, wrk-check-every not negative")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("seconds must be positive and warmup not negative")
    if args.batch_size > args.end_users:
        parser.error("a batch draws distinct End Users: batch-size <= end-users")
    return args


async def against(
    args: argparse.Namespace, url: str, name: str, target: Target, accounts: list[Account]
) -> bool:
    """consumeCredits of this checkout's server and the `--against` one's, in interleaved
    rounds of wrk at `--clients` (`--rounds`, each of `--seconds` on a server started for
    it, after a warm-up of `--warmup`): the medians of the rates and of the server's and
    PostgreSQL's CPU a request, and their ratios. One server runs at a time (an idle one
    would still relay the other's events), with a pool of `--pool-size`. False when a
    request failed."""
    bodies = wrk_bodies(target, accounts)
    checkouts = (ROOT, args.against.resolve())
    rounds: dict[Path, list[dict[str, float]]] = {c: [] for c in checkouts}
    admin = await asyncpg.connect(args.admin_dsn)
    try:
        for number in range(args.rounds):
            for checkout in checkouts if number % 2 == 0 else checkouts[::-1]:
                await wait_for_connections(args.admin_dsn, args.pool_size + 1)
                server = await start_usagegraph(
                    url,
                    args.pool_size,
                    not args.no_access_log,
                    None,
                    args.work_dir,
                    target.api_key,
                    checkout=checkout,
                )
                try:
                    await wrk_load(server.url, target.api_key, bodies, args.clients, 0, args.warmup)
                    rounds[checkout].append(
                        await measured_round(
                            server,
                            wrk_load,
                            target.api_key,
                            bodies,
                            args.clients,
                            args.seconds,
                            admin,
                            name,
                        )
                    )
                finally:
                    server.stop()
    finally:
        await admin.close()
    ours, theirs = (rounds[c] for c in checkouts)

    clients = args.clients
    print_comparison(
        f"consumeCredits, interleaved with {args.against} ({args.rounds} rounds, medians)",
        [
            (f"consumptions/s at {clients} clients", ours, theirs, "rate", "{:,.0f}"),
            (f"p99 at {clients} clients (ms)", ours, theirs, "p99", "{:.1f}"),
            ("server CPU per request (ms)", ours, theirs, "server_ms", "{:.3f}"),
            ("PostgreSQL CPU per request (ms)", ours, theirs, "pg_ms", "{:.3f}"),
        ],
    )
    print(rates_line(ours, theirs, clients))
    return not any(r["errors"] for r in ours + theirs)


async def verified() -> bool:
    """`verify_ledger()`, printed (its first 20 problems); whether it found none."""
    problems = await verify_ledger()
    print(
        "verify_ledger(): " + ("[] (every counter equals its ledger sum)" if not problems else "")
    )
    for problem in problems[:20]:
        print(f"  {problem}")
    if len(problems) > 20:
        print(f"  ... {len(problems) - 20} more")
    return not problems


async def main(args: argparse.Namespace) -> int:
    wrk = None
    if args.load == "wrk" or args.against is not None:
        wrk = find_wrk()
        if wrk is None:
            print(
                "--load wrk needs wrk (https://github.com/wg/wrk) on PATH, e.g. `apt-get install"
                " wrk`; or run without --load wrk to use the httpx clients",
                file=sys.stderr,
            )
            return 2
    work_dir = args.work_dir = Path(tempfile.mkdtemp(prefix="usagegraph_graphql_bench_"))
    profiler = PySpy(True) if args.profile else None
    load_start = os.getloadavg()
    name = await create_database(args.admin_dsn)
    url, dsn = database_urls(args.admin_dsn, name)
    print(f"scratch database {name}; work files in {work_dir}")
    server: Server | None = None
    try:
        # This process's own Tortoise pool (seeding, counts, verify) stays small.
        await open_database(
            Settings(DATABASE_URL=url, USAGEGRAPH_DB_POOL_MIN=1, USAGEGRAPH_DB_POOL_MAX=4)
        )
        started = time.perf_counter()
        accounts, application_id, api_key, refs = await seed(args.end_users)
        print(f"funded {len(accounts)} End Users in {time.perf_counter() - started:.1f} s")
        if args.against is not None:
            target = Target("", api_key, application_id, refs)
            if not await against(args, url, name, target, accounts):
                return 1
            return 0 if await verified() else 1

        def progress(phase: Phase) -> None:
            print(
                f"  {phase.label} x{phase.concurrency}:"
                f" {phase.consumptions_per_second:.1f} consumptions/s",
                flush=True,
            )

        raw_single_runs = [await raw_phase("raw single (before)", dsn, accounts, args)]
        progress(raw_single_runs[-1])
        raw_combined_runs = [await raw_phase("raw combined (before)", dsn, accounts, args)]
        progress(raw_combined_runs[-1])

        # The raw loops' outbox rows (a few hundred thousand) have no subscriber: left in place,
        # the server's relay would spend the measured window publishing them.
        await clear_outbox()
        # The raw pools are closed: the server's pool opens now, and closes before the next.
        await wait_for_connections(args.admin_dsn, args.pool_size + 1)
        server = await start_usagegraph(
            url, args.pool_size, not args.no_access_log, args.server_cmd, work_dir, api_key
        )
        print(f"server pid {server.pid} at {server.url}: {server.command}", flush=True)
        target = Target(server.url, api_key, application_id, refs)
        async with Clients(target, args.clients, args.shared_client) as clients:
            warmed = await prewarm(clients, accounts, args.clients)
            if wrk is None:
                single = await run_phase(
                    "consumeCredits",
                    single_consumer(clients),
                    accounts,
                    args.clients,
                    1,
                    args,
                    server.pid,
                    profiler,
                )
        if wrk is not None:
            single = await wrk_phase(target, accounts, args, server.pid, work_dir, profiler)
        progress(single)
        batches: list[Phase] = []
        for number, concurrency in enumerate(args.batch_clients):
            async with Clients(target, concurrency, args.shared_client) as clients:
                batches.append(
                    await run_phase(
                        f"consumeCreditsBatch({args.batch_size})",
                        batch_consumer(clients, accounts, args.batch_size, args.seed + number),
                        accounts,
                        concurrency,
                        args.batch_size,
                        args,
                        server.pid,
                        profiler,
                    )
                )
            progress(batches[-1])
        server.stop()

        raw_combined_runs.append(await raw_phase("raw combined (after)", dsn, accounts, args))
        progress(raw_combined_runs[-1])
        raw_single_runs.append(await raw_phase("raw single (after)", dsn, accounts, args))
        progress(raw_single_runs[-1])
        load_end = os.getloadavg()
        phases = [*raw_single_runs[:1], *raw_combined_runs[:1], single, *batches]
        phases += [*raw_combined_runs[1:], *raw_single_runs[1:]]

        print()
        print("== usagegraph GraphQL benchmark: consumeCredits over HTTP on PostgreSQL ==")
        print(
            f"server: 1 process, `{server.command}`, pool {args.pool_size}; raw pools"
            f" {args.pool_size}; uvicorn access log"
            + (
                " as --server-cmd sets it"
                if args.server_cmd
                else " OFF (--no-access-log)"
                if args.no_access_log
                else " ON (INFO, a line a request)"
            )
        )
        httpx_clients = (
            "one shared AsyncClient, max_connections = concurrency"
            if args.shared_client
            else "one AsyncClient of one connection per client"
        )
        if wrk is None:
            load = (
                f"load: httpx.AsyncClient keep-alive, {args.clients} concurrent for"
                f" consumeCredits, {', '.join(map(str, args.batch_clients)) or 'none'} for"
                f" batches of {args.batch_size} ({httpx_clients})"
            )
        else:
            checks = (
                "status and body of every answer checked"
                if args.wrk_check_every == 1
                else f"every status and every {args.wrk_check_every}th body checked"
                if args.wrk_check_every
                else "no response hook: only statuses > 399 seen"
            )
            load = (
                f"load: consumeCredits by wrk -t{args.wrk_threads} -c{args.clients} keep-alive"
                f" ({wrk}, bench/wrk_post.lua, {checks}; warm-up and window are separate wrk"
                f" runs); batches by httpx.AsyncClient keep-alive,"
                f" {', '.join(map(str, args.batch_clients)) or 'none'} concurrent of"
                f" {args.batch_size} ({httpx_clients}); prewarm by httpx"
            )
        print(
            load + f"; {args.end_users} End Users in 1 application, named by externalId;"
            f" {args.loop} loop in this process; raw phases: {args.clients} tasks"
        )
        print(
            f"warm-up {args.warmup:g} s, window {args.seconds:g} s per phase; CPUs"
            f" {os.cpu_count()}; load average at start {load_start[0]:.2f} {load_start[1]:.2f}"
            f" {load_start[2]:.2f}, at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}"
        )
        print()
        print_table(phases)
        print()
        print_summary(args, raw_single_runs, raw_combined_runs, single, batches)

        print()
        consumptions = warmed + sum(p.consumptions_total for p in phases)
        counts = await consumption_rows()
        errors = sum(p.errors for p in phases)
        rows_ok = all(counts[key] == consumptions for key in ("usage_event", "ledger_entry"))
        print(
            f"rows written: {counts['usage_event']} usage events, {counts['ledger_entry']}"
            f" CONSUME entries for {consumptions} consumptions completed: "
            + ("consistent" if rows_ok else "MISMATCH")
            + f"; {counts['transactions']} transactions;"
            f" {counts['unpublished']} outbox rows unpublished (the raw phases after the"
            " server stopped leave theirs)"
            + (f"; {errors} failed calls (they may have committed)" if errors else "")
        )
        wrk_ok = True
        if single.wrk is not None:
            info = single.wrk
            bound = args.clients * len(info.runs) + info.errors
            wrk_ok = 0 <= info.unanswered <= bound
            print(
                f"wrk phase: {info.rows} consumptions committed from its warm-up's start until"
                f" the rows settled ({info.settle:.1f} s after the window), {info.answered}"
                f" answered successfully to wrk: {info.unanswered} unanswered (in flight when a"
                f" wrk run stopped; at most {args.clients} per run"
                + (f" + {info.errors} failed" if info.errors else "")
                + "): "
                + ("consistent" if wrk_ok else "MISMATCH")
            )
        ledger_ok = await verified()
        for phase in (single, *batches):
            if phase.profile is not None:
                print()
                print(f"server profile during {phase.label} x{phase.concurrency}:")
                print_profile(phase.profile, 25 if phase is single else 12)
        return 0 if rows_ok and wrk_ok and ledger_ok and not errors else 1
    finally:
        if server is not None:
            server.stop()
            if server.process.returncode not in (0, -signal.SIGTERM):
                print(f"server exited with {server.process.returncode}:\n{server.tail()}")
        await close_database()
        if args.keep:
            print(f"kept database {name}")
        else:
            await drop_database(args.admin_dsn, name)
            print(f"dropped database {name}")
        if not args.profile and not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)


def run() -> int:
    args = parse_args()
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(main(args))
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(run())
