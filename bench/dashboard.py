"""The Usage page's dashboard query over HTTP against one `usagegraph serve` process on
PostgreSQL, beside the bare SQL it needs, in the same run.

Data (generated set-based, straight into the tables, consistent with every counter: the
script runs `usagegraph verify` on it and exits 1 unless it passes): one application with
`--end-users` End Users (default 10,000) and `--events` usage events (default 1,000,000)
over `--days` days (default 90) in two pools ("ai": AI generation and rewrite, 75%;
"inbox_preview": 25%), 1 to 4 credits each, End Users drawn with a skew (a few heavy ones),
3% of the events on one spike day. Each usage event has its CONSUME ledger entry (created
when it occurred, as if recorded live). Allocations: what each End User used plus a
headroom that leaves ~10% of them EXHAUSTED and ~20% LOW (threshold 50); half of the End
Users who used nothing hold 500 unused credits, the others none. One lot per pool.
One request-log entry per 10 usage events (a few failing), as a live log holds.
After loading: ANALYZE, then one fold of the reporting rollups (`models.rollups.fold_usage`,
timed); the server also folds every 30 s by itself.

Measured
    dashboard     `--clients` concurrent clients (default 16) POST the dashboard query
                  (below) for `--seconds` (after `--warmup`), with the load generator
                  `--load` (wrk, default when installed, or httpx): requests/s, p50, p99,
                  and the server process's CPU time per request (/proc), which other
                  work on the machine does not inflate as much as latency.
    raw SQL       the statements the dashboard query sends (captured on the wire from an
                  in-process execution) replayed by `--clients` asyncpg tasks, each
                  dashboard's statements one after the other, for the same time: per
                  dashboard p50 and p99, and the CPU per dashboard of the replaying
                  process and of PostgreSQL.
                  This is the floor of the SQL part.
    HTTP floor    the same answer bytes from a bare Starlette endpoint on uvicorn (the
                  body parsed as JSON, nothing else), loaded the same way: rate, p50, p99
                  and its CPU per request; and the CPU to encode the answer as JSON.
    budget        16 clients at p50 50 ms ask for 320 answers/s: one process then has at
                  most 50/16 = 3.1 ms of CPU per dashboard; printed beside the server's
                  and beside the floor of the three parts above (no GraphQL work at all).
    ledger scan   the aggregate the consumption part would need without the rollups (90
                  days of DAY buckets per pool straight from ledger_entry), 5 runs, median.

The dashboard query: the application, its pools with 90 days of DAY buckets and their 5
newest packs, the "ai" allocation summary with its top 10 consumers and 10 End Users closest
to running out, the first 50 End Users with their balances (burn rates and projected
exhaustion included), and the last 50 request-log entries when the schema has them.

    .venv/bin/python -m bench.dashboard [--quick] [--end-users N] [--events N] [--clients 16]
        [--keep] [--database NAME] [--profile FILE] [--query dashboard|nested] [--parts]
        [--statements]
        [--against DIR [--rounds N] [--single-seconds S] [--only-against]]

`--quick` (1,000 End Users, 50,000 events, 5 s) checks that everything runs. `--keep`
keeps the generated database and prints its name; `--database NAME` runs against such a
kept database instead of generating one (migrated and folded first, the series range
ending now). `--profile FILE` samples the server with py-spy during the measured load and
writes collapsed stacks to FILE. `--parts` also prints the CPU of this process per
execution of the whole dashboard and of each of its parts alone (`DASHBOARD_PARTS`),
executed in process as the server does without HTTP: where the server's time goes.
`--statements` also prints each of the statements alone, replayed by `--clients` tasks for
a few seconds with the server's plan settings: its CPU per execution in PostgreSQL and in
the replaying process, under load.
`--against DIR` compares, in interleaved rounds at `--clients` and at one client, this
checkout's server with the server of checkout DIR (run by DIR/.venv): rates, latencies, the
server's CPU and PostgreSQL's per dashboard, and the ratios. The machine is shared by
client, server and PostgreSQL: compare figures within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from api.database import (
    PooledConnection,
    close_database,
    connection_config,
    planned_once_config,
)
from api.settings import Settings
from bench.dashboard_query import DASHBOARD, DASHBOARD_PARTS, NESTED, part_query
from bench.harness import (
    DEFAULT_ADMIN_DSN,
    ROOT,
    PySpy,
    Runner,
    Server,
    against_arguments,
    backend_cpu,
    checkout_python,
    cpu_since,
    create_database,
    database_urls,
    drop_database,
    first_answer,
    load_runner,
    machine_line,
    measured_round,
    open_database,
    percentile,
    print_comparison,
    process_cpu_seconds,
    rates_line,
    start_server,
    usagegraph_serve,
)

THRESHOLD = 50

# -------------------------------------------------------------------------------- data


async def generate(dsn: str, app: int, users: int, events: int, days: int) -> None:
    """Every row set-based, consistent with the counters (see the module docstring)."""
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(days=days)
    spike = (now - timedelta(days=12)).replace(hour=0, minute=0, second=0)
    try:
        pools = {
            r["key"]: r["id"]
            for r in await conn.fetch(
                "SELECT id, key FROM credit_pool WHERE application_id=$1", app
            )
        }
        ai, preview = pools["ai"], pools["inbox_preview"]
        async with conn.transaction():
            await conn.execute(
                "UPDATE credit_pool SET end_user_low_balance_threshold = $2"
                " WHERE application_id = $1",
                app,
                THRESHOLD,
            )
            await conn.execute(
                "INSERT INTO end_user (application_id, external_id, name, email, created_at)"
                " SELECT $1, 'user-' || lpad(g::text, 6, '0'), 'User ' || g,"
                " 'user' || g || '@example.com', $3 FROM generate_series(1, $2) g",
                app,
                users,
                t0 - timedelta(days=3),
            )
            base = await conn.fetchval("SELECT min(id) FROM end_user WHERE application_id=$1", app)
            await conn.execute(
                "CREATE TEMP TABLE gen ON COMMIT DROP AS SELECT i,"
                " $1::bigint + floor($2 * r1 * r1)::bigint AS end_user_id,"
                " CASE WHEN r2 < 0.75 THEN $3::bigint ELSE $4::bigint END AS pool_id,"
                " CASE WHEN r2 < 0.45 THEN 'ai_generation' WHEN r2 < 0.75 THEN 'ai_rewrite'"
                " ELSE 'inbox_preview' END AS feature, 1 + floor(r3 * 4)::int AS credits,"
                " CASE WHEN r4 < 0.03 THEN $6::timestamptz + r5 * interval '1 day'"
                " ELSE $7::timestamptz + r5 * ($8::timestamptz - $7::timestamptz) END"
                " AS occurred_at FROM (SELECT g AS i, random() r1, random() r2, random() r3,"
                " random() r4, random() r5 FROM generate_series(1, $5) g) x",
                base,
                users,
                ai,
                preview,
                events,
                spike,
                t0,
                now - timedelta(minutes=1),
            )
            first_event = await conn.fetchval("SELECT COALESCE(max(id), 0) FROM usage_event")
            await conn.execute(
                "INSERT INTO usage_event (id, application_id, pool_id, end_user_id, credits,"
                " feature, occurred_at, created_at) SELECT $1 + i, $2, pool_id, end_user_id,"
                " credits, feature, occurred_at, occurred_at FROM gen",
                first_event,
                app,
            )
            await conn.execute(
                "SELECT setval('usage_event_id_seq', (SELECT max(id) FROM usage_event))"
            )
            # What each End User holds: its use plus a headroom (0: EXHAUSTED, < 50: LOW).
            await conn.execute(
                "CREATE TEMP TABLE alloc ON COMMIT DROP AS SELECT end_user_id, pool_id,"
                " SUM(credits)::bigint AS used FROM gen GROUP BY 1, 2"
            )
            await conn.execute(
                "INSERT INTO alloc SELECT e.id, $2, 0 FROM end_user e WHERE e.application_id"
                " = $1 AND e.id % 2 = 0 AND NOT EXISTS (SELECT 1 FROM alloc a"
                " WHERE a.end_user_id = e.id AND a.pool_id = $2)",
                app,
                ai,
            )
            await conn.execute(
                "ALTER TABLE alloc ADD COLUMN allocated bigint;"
                " UPDATE alloc SET allocated = used + CASE WHEN used = 0 THEN 500"
                " WHEN random() < 0.1 THEN 0 WHEN random() < 0.25 THEN 1 + floor(random() * 40)"
                " ELSE 100 + floor(random() * 3000) END"
            )
            lots: dict[int, int] = {}
            for pool in (ai, preview):
                allocated = await conn.fetchval(
                    "SELECT COALESCE(SUM(allocated), 0) FROM alloc WHERE pool_id = $1", pool
                )
                used = await conn.fetchval(
                    "SELECT COALESCE(SUM(used), 0) FROM alloc WHERE pool_id = $1", pool
                )
                credits = allocated + 20_000
                bought = t0 - timedelta(days=2)
                lots[pool] = await conn.fetchval(
                    "INSERT INTO credit_pack (pool_id, credits, unallocated, used, expired,"
                    " purchased_at, package, reference) VALUES ($1, $2, $3, $4, 0, $5,"
                    " 'Bench pack', $6) RETURNING id",
                    pool,
                    credits,
                    credits - allocated,
                    used,
                    bought,
                    f"bench-{pool}",
                )
                await conn.execute(
                    "INSERT INTO ledger_entry (application_id, pool_id, lot_id, kind, amount,"
                    " occurred_at, created_at) VALUES ($1, $2, $3, 'PURCHASE', $4, $5, $5)",
                    app,
                    pool,
                    lots[pool],
                    credits,
                    bought,
                )
                await conn.execute(
                    "UPDATE credit_pool SET purchased = $2, allocated = $3::bigint,"
                    " used = $4::bigint, end_user_remaining = $3::bigint - $4::bigint,"
                    " version = version + 1 WHERE id = $1",
                    pool,
                    credits,
                    allocated,
                    used,
                )
            lot_of = f"CASE pool_id WHEN {ai} THEN {lots[ai]} ELSE {lots[preview]} END"
            await conn.execute(
                "INSERT INTO allocation (end_user_id, pool_id, lot_id, allocated, used, expired,"
                f" remaining) SELECT end_user_id, pool_id, {lot_of}, allocated, used, 0,"
                " allocated - used FROM alloc WHERE allocated > 0"
            )
            await conn.execute(
                "INSERT INTO ledger_entry (application_id, pool_id, lot_id, end_user_id, kind,"
                f" amount, occurred_at, created_at) SELECT $1, pool_id, {lot_of}, end_user_id,"
                " 'ALLOCATE', allocated, $2, $2 FROM alloc WHERE allocated > 0",
                app,
                t0 - timedelta(days=1),
            )
            await conn.execute(
                "INSERT INTO end_user_balance (end_user_id, pool_id, allocated, used, expired,"
                " remaining, status, version, updated_at) SELECT end_user_id, pool_id,"
                " allocated, used, 0, allocated - used, CASE WHEN allocated = used THEN"
                f" 'EXHAUSTED' WHEN allocated - used <= {THRESHOLD} THEN 'LOW' ELSE 'OK' END,"
                " 1, now() FROM alloc WHERE allocated > 0"
            )
            await conn.execute(
                "INSERT INTO ledger_entry (application_id, pool_id, lot_id, end_user_id, kind,"
                " amount, feature, usage_event_id, occurred_at, created_at)"
                f" SELECT $1, pool_id, {lot_of}, end_user_id, 'CONSUME', -credits, feature,"
                " $2 + i, occurred_at, occurred_at FROM gen",
                app,
                first_event,
            )
            # the request log's history: one consumeCredits call per 10 events, a few
            # failing, so that its statistics are a live log's, not an empty table's
            # (autovacuum may be off: nothing would analyze it while the load grows it)
            await conn.execute(
                "INSERT INTO request_log (application_id, organization_id, time, method,"
                " endpoint, operation_name, end_user_id, end_user_external_id, api_key_prefix,"
                " status, outcome, error_code, latency_ms, request_id, source)"
                " SELECT $1, a.organization_id, occurred_at, 'POST',"
                " 'POST /graphql consumeCredits', 'Consume', end_user_id, NULL, 'ug_bench',"
                " CASE WHEN i % 97 = 0 THEN 400 ELSE 200 END,"
                " CASE WHEN i % 97 = 0 THEN 'CLIENT_ERROR' ELSE 'OK' END,"
                " CASE WHEN i % 97 = 0 THEN 'INSUFFICIENT_CREDITS' END, 3 + i % 17,"
                " 'bench-' || i, 'api' FROM gen JOIN application a ON a.id = $1"
                " WHERE i % 10 = 0",
                app,
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def kept_application(dsn: str) -> tuple[int, int]:
    """The organization and application of a database generated by an earlier run, its
    statistics refreshed: earlier runs grew its request log, and autovacuum is off on the
    reference machines (stale counts pick a bitmap scan and a sort of the whole log)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
        row = await conn.fetchrow(
            "SELECT a.organization_id, a.id FROM application a WHERE a.name = 'Dashboard bench'"
            " ORDER BY a.id LIMIT 1"
        )
    finally:
        await conn.close()
    if row is None:
        raise SystemExit("no dashboard bench application in that database")
    return row["organization_id"], row["id"]


async def verified(url: str) -> bool:
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "from api.cli import main; main()", "verify"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    print(
        f"usagegraph verify: exit {verify.returncode}: {verify.stdout.strip()}"
        f"{verify.stderr.strip()[:500]}"
    )
    return verify.returncode == 0


# ------------------------------------------------------------------------------ raw SQL


@dataclass(frozen=True)
class Statement:
    """A statement the server sent: its text, arguments, and whether it ran on the pool
    whose sessions plan once (`models.sql._fetch_planned_once`)."""

    text: str
    args: tuple[Any, ...]
    generic: bool


async def statements_now(
    db: BenchDatabase, app: int, query: str, variables: dict[str, Any]
) -> list[Statement]:
    """The statements a server sends for the query now, captured with the ORM opened on the
    database for the time of it. Their arguments hold the burn window's start, which moves
    each UTC hour: replayed later, an earlier hour's statements would read the moved hour
    from the ledger every time, where a server does so only until the fold just after the
    hour has summed it."""
    await open_database(Settings(DATABASE_URL=db.url))
    try:
        return await captured_statements(db, app, query, variables)
    finally:
        await close_database()


async def captured_statements(
    db: BenchDatabase, app: int, query: str, variables: dict[str, Any]
) -> list[Statement]:
    """The statements (and arguments) one in-process execution of the query sends, as the
    server executes an HTTP request (preserialized values allowed), after one execution
    uncaptured: what a server that has answered before sends (a quiet pool's summary read
    from the reports alone, say), not what its first answer does."""
    from asyncpg.connection import Connection

    from models.access import Principal
    from models.tenancy import ApiKeyRole
    from resolvers.context import Context
    from resolvers.schema import schema

    seen: list[Statement] = []
    original = Connection._execute
    planned_once = server_session_settings(db)[True]

    async def capture(self: Any, query: str, args: Any, *rest: Any, **kw: Any) -> Any:
        generic = self._params.server_settings == planned_once
        seen.append(Statement(query, tuple(args), generic))
        return await original(self, query, args, *rest, **kw)

    principal = Principal(0, app, ApiKeyRole.READ, None, None)

    async def execute() -> Any:
        context = Context(None, None, principal, preserialized=True)
        return await schema.execute(query, variable_values=variables, context_value=context)

    await execute()
    Connection._execute = capture  # type: ignore[method-assign]
    try:
        result = await execute()
    finally:
        Connection._execute = original  # type: ignore[method-assign]
    assert result.errors is None, result.errors
    return seen


REPLAY_NAME = "usagegraph-bench-replay"  # the replaying sessions' application_name


def server_session_settings(db: BenchDatabase) -> dict[bool, dict[str, str]]:
    """The session settings of the server's two pools on the database, by
    `Statement.generic`: the main one's, and those of the one whose sessions plan once."""
    settings = Settings(DATABASE_URL=db.url)
    main = connection_config(settings)
    assert isinstance(main, dict)
    return {
        False: main["credentials"]["server_settings"],
        True: planned_once_config(settings)["credentials"]["server_settings"],
    }


async def replay_pools(db: BenchDatabase, size: int) -> dict[bool, asyncpg.Pool]:
    """Pools as the server's (no reset statement on release, its session settings), by
    `Statement.generic`."""
    pools = {}
    for generic, settings in server_session_settings(db).items():
        pools[generic] = await asyncpg.create_pool(
            db.dsn,
            min_size=size,
            max_size=size,
            connection_class=PooledConnection,
            server_settings={**settings, "application_name": REPLAY_NAME},
        )
    return pools


@dataclass(frozen=True)
class Replay:
    """Where and how wide statements are replayed: the database, the admin DSN that reads
    its backends' CPU, and the number of replaying tasks."""

    db: BenchDatabase
    admin_dsn: str
    clients: int


async def replayed(replay: Replay, statements: list[Statement], seconds: float) -> dict[str, float]:
    """`replay.clients` tasks sending `statements` one after the other, again and again, for
    `seconds`: rounds/s, p50 and p99 of a round, and per round the CPU of this process
    and of the replaying backends."""
    clients, database = replay.clients, replay.db.name
    pools = await replay_pools(replay.db, clients)
    admin = await asyncpg.connect(replay.admin_dsn)
    latencies: list[float] = []
    try:
        for statement in statements:  # each prepared on every session, as when warm
            for _ in range(clients):
                async with pools[statement.generic].acquire() as conn:
                    await conn.fetch(statement.text, *statement.args)
        pg_before = await backend_cpu(admin, database, (REPLAY_NAME, True))
        cpu_before = time.process_time()
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                for statement in statements:
                    # a connection per statement, as the server acquires one
                    async with pools[statement.generic].acquire() as conn:
                        await conn.fetch(statement.text, *statement.args)
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(clients)))
        cpu = time.process_time() - cpu_before
        postgres = cpu_since(pg_before, await backend_cpu(admin, database, (REPLAY_NAME, True)))
    finally:
        await admin.close()
        for pool in pools.values():
            await pool.close()
    rounds = max(1, len(latencies))
    return {
        "rate": len(latencies) / seconds,
        "p50": percentile(latencies, 0.5) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "cpu_ms": cpu * 1000 / rounds,
        "pg_ms": postgres * 1000 / rounds,
    }


Capture = Callable[[], Awaitable[list[Statement]]]


async def statement_costs(
    replay: Replay, statements: list[Statement], capture: Capture, seconds: float
) -> list[dict[str, float]]:
    """Each of `statements` alone, replayed for `seconds` as `capture` gives it at that
    moment: its executions/s and its CPU per execution in PostgreSQL and in this process,
    under load as in a dashboard run rather than alone (where caches are warm and nothing
    contends)."""
    costs = []
    for statement in statements:
        now = {s.text: s for s in await capture()}
        costs.append(await replayed(replay, [now.get(statement.text, statement)], seconds))
    return costs


async def print_statement_costs(
    replay: Replay, statements: list[Statement], capture: Capture, options: argparse.Namespace
) -> None:
    seconds = 1.0 if options.quick else 3.0
    costs = await statement_costs(replay, statements, capture, seconds)
    print(
        f"\n| statement, alone, {options.clients} replaying tasks, {seconds:.0f} s"
        " | executions/s | PostgreSQL CPU each | replaying process CPU each |"
    )
    print("|---|---|---|---|")
    for statement, cost in zip(statements, costs, strict=True):
        plan = "generic plan; " if statement.generic else ""
        print(
            f"| `{statement_label(statement)}` ({plan}{len(statement.args)} arguments)"
            f" | {cost['rate']:,.0f} | {cost['pg_ms']:.3f} ms | {cost['cpu_ms']:.3f} ms |"
        )
    pg = sum(c["pg_ms"] for c in costs)
    client = sum(c["cpu_ms"] for c in costs)
    print(f"| all of them | | {pg:.2f} ms | {client:.2f} ms |")


def statement_label(statement: Statement, width: int = 70) -> str:
    """The statement's first words, on one line, for a table."""
    text = " ".join(statement.text.split())
    return (text[:width] + "...") if len(text) > width else text


async def parts_cpu(app: int, variables: dict[str, Any], runs: int) -> dict[str, float]:
    """The CPU of this process per execution of each part of the dashboard (best of three
    runs of `runs`), executed in process as the server executes an HTTP request and encoded
    as its answer: the server's work without HTTP, statements and JSON included."""
    from api.http_answer import encode_json
    from models.access import Principal
    from models.tenancy import ApiKeyRole
    from resolvers.context import Context
    from resolvers.schema import schema

    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    costs = {}
    for name, selection in {"whole dashboard": None, **DASHBOARD_PARTS}.items():
        query = DASHBOARD if selection is None else part_query(selection)
        values = variables if "$from" in query else {"id": variables["id"]}

        async def execute(query: str = query, values: dict[str, Any] = values) -> None:
            context = Context(None, None, principal, preserialized=True)
            result = await schema.execute(query, variable_values=values, context_value=context)
            assert result.errors is None, result.errors
            encode_json({"data": result.data})

        for _ in range(max(1, runs // 10)):
            await execute()
        best = float("inf")
        for _ in range(3):
            before = time.process_time()
            for _ in range(runs):
                await execute()
            best = min(best, (time.process_time() - before) * 1000 / runs)
        costs[name] = best
    return costs


# ------------------------------------------------------------------------- HTTP floor


def serve_bare(port: int, answer_file: str) -> None:
    """The HTTP floor: the dashboard's answer bytes, as they are, from a bare Starlette POST
    endpoint on uvicorn with the HTTP settings `usagegraph serve` leaves at their defaults
    (the request body read and parsed as JSON, as any server must), in this process until
    terminated."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    answer = Path(answer_file).read_bytes()

    async def graphql(request: Request) -> Response:
        json.loads(await request.body())
        return Response(answer, media_type="application/json")

    app = Starlette(routes=[Route("/graphql", graphql, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def bare_http(
    runner: Runner, answer: bytes, key: str, body: dict[str, Any], clients: int, seconds: float
) -> dict[str, float]:
    """Load the HTTP floor server (`serve_bare`) like the real one: rate, latencies and its
    CPU per request."""
    with tempfile.TemporaryDirectory() as work:
        answer_file = Path(work) / "answer.json"
        answer_file.write_bytes(answer)
        server = start_server(
            lambda port: [
                *(sys.executable, "-m", "bench.dashboard", "--serve-bare"),
                *(str(port), str(answer_file)),
            ],
            {},
            Path(work),
        )
        try:
            await first_answer(server.url, key, body)
            await runner(server.url, key, body, clients, 0, 2)  # warm up
            cpu_before = process_cpu_seconds(server.pid)
            result = await runner(server.url, key, body, clients, 0, seconds)
            cpu = process_cpu_seconds(server.pid) - cpu_before
        finally:
            server.stop()
    result["cpu_ms"] = cpu * 1000 / max(1, result["rate"] * seconds)
    return result


def encoding_ms(data: Any) -> float:
    """CPU to encode the answer as the server does (`api.http_answer.encode_json`)."""
    from api.http_answer import encode_json

    began = time.process_time()
    for _ in range(200):
        encode_json(data)
    return (time.process_time() - began) * 1000 / 200


async def ledger_scan(dsn: str, app: int, start: datetime, end: datetime) -> float:
    conn = await asyncpg.connect(dsn)
    times = []
    try:
        for _ in range(5):
            began = time.perf_counter()
            await conn.fetch(
                "SELECT pool_id, date_trunc('day', occurred_at AT TIME ZONE 'UTC') AS day,"
                " -SUM(CASE WHEN kind = 'CONSUME' THEN amount ELSE 0 END) AS used,"
                " -SUM(CASE WHEN kind = 'EXPIRE' THEN amount ELSE 0 END) AS expired,"
                " SUM(CASE WHEN kind = 'PURCHASE' THEN amount ELSE 0 END) AS purchased"
                " FROM ledger_entry WHERE application_id = $1 AND occurred_at >= $2"
                " AND occurred_at < $3 GROUP BY 1, 2",
                app,
                start,
                end,
            )
            times.append(time.perf_counter() - began)
    finally:
        await conn.close()
    return statistics.median(times) * 1000


# A billing period's two reads without the rollups: every entry booked since the period's
# start, as a period was read before the billing rollups (the baseline of `billing_reads`).
def ledger_entries() -> str:
    """The entries of `models.billing.flows_statement` read from the ledger alone."""
    from models.billing import ENTRY_COLUMNS

    return (
        f"SELECT {ENTRY_COLUMNS} FROM ledger_entry l"
        " WHERE l.pool_id IN (SELECT id FROM credit_pool WHERE application_id = $1)"
        " AND l.created_at >= $2"
    )


LEDGER_ACTIVE = """
WITH pairs AS (
  SELECT DISTINCT pool_id, end_user_id FROM ledger_entry
  WHERE pool_id IN (SELECT id FROM credit_pool WHERE application_id = $1) AND kind = 'CONSUME'
    AND created_at >= $2 AND created_at < $3
)
SELECT pool_id, COUNT(*) AS active FROM pairs GROUP BY pool_id
UNION ALL SELECT NULL, COUNT(DISTINCT end_user_id) FROM pairs
"""


async def billing_reads(dsn: str, app: int) -> list[tuple[datetime, int, float, float]]:
    """Each month with entries: its entries, and the median time of its billing figures'
    two statements as the server sends them (rollups and tail) and straight from the
    ledger, after checking that both give the same rows."""
    from models.billing import _ACTIVE, _FLOWS, flows_statement, next_month

    conn = await asyncpg.connect(dsn)
    found = []
    try:
        months = await conn.fetch(
            "SELECT date_trunc('month', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m,"
            " COUNT(*) AS n FROM ledger_entry WHERE application_id = $1 GROUP BY 1 ORDER BY 1",
            app,
        )
        for month in months:
            start = month["m"]
            end = next_month(start)
            timings = {}
            answers = {}
            for name, pair in (
                ("ours", (_FLOWS, _ACTIVE)),
                ("ledger", (flows_statement(ledger_entries()), LEDGER_ACTIVE)),
            ):
                times = []
                for _ in range(5):
                    began = time.perf_counter()
                    rows = [await conn.fetch(text, app, start, end) for text in pair]
                    times.append(time.perf_counter() - began)
                timings[name] = statistics.median(times) * 1000
                answers[name] = [sorted(map(tuple, part), key=str) for part in rows]
            if answers["ours"] != answers["ledger"]:
                raise SystemExit(f"billing figures of {start:%Y-%m} differ from the ledger's")
            found.append((start, month["n"], timings["ours"], timings["ledger"]))
    finally:
        await conn.close()
    return found


# ------------------------------------------------------------ database and server (shared)


def bench_arguments(description: str) -> argparse.ArgumentParser:
    """The options of the data, the load and the database, shared by the dashboard
    benchmarks."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN)
    parser.add_argument("--end-users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--load", choices=("wrk", "httpx"), default=None)
    parser.add_argument("--quick", action="store_true", help="1,000 End Users, 50,000 events")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--database", help="reuse a database kept by --keep (implies --keep)")
    return parser


def parsed(parser: argparse.ArgumentParser) -> argparse.Namespace:
    options = parser.parse_args()
    if options.quick:
        options.end_users, options.events, options.seconds, options.warmup = 1000, 50_000, 5, 2
    options.keep = options.keep or options.database is not None
    return options


@dataclass(frozen=True, slots=True)
class BenchDatabase:
    name: str
    dsn: str  # asyncpg's spelling
    url: str  # the server's DATABASE_URL
    reused: bool


async def bench_database(options: argparse.Namespace) -> BenchDatabase:
    """A new scratch database, or the kept one `--database` names."""
    name = options.database or await create_database(options.admin_dsn, "usagegraph_dashboard")
    url, dsn = database_urls(options.admin_dsn, name)
    return BenchDatabase(name, dsn, url, options.database is not None)


async def populate(db: BenchDatabase, options: argparse.Namespace) -> tuple[int, str] | None:
    """Migrates, generates the data (or finds a kept database's application) and folds the
    rollups; the application and a READ key of it, or None when `usagegraph verify` fails.
    Leaves the ORM initialised on the database (`close_database` when done with it)."""
    await open_database(Settings(DATABASE_URL=db.url))
    from models.accounts import create_api_key, create_application, create_organization
    from models.rollups import fold_usage
    from models.tenancy import ApiKeyRole

    if db.reused:
        organization_id, app = await kept_application(db.dsn)
        key = (await create_api_key(organization_id, "bench", ApiKeyRole.READ, app)).secret
        print(f"reusing database {db.name} (application {app})")
    else:
        organization, _ = await create_organization("dashboard bench")
        app = (await create_application(organization.id, "Dashboard bench", "Growth")).id
        key = (await create_api_key(organization.id, "bench", ApiKeyRole.READ, app)).secret
        began = time.perf_counter()
        await generate(db.dsn, app, options.end_users, options.events, options.days)
        print(
            f"generated {options.end_users:,} End Users and {options.events:,} usage events"
            f" over {options.days} days in {time.perf_counter() - began:.1f} s"
        )
        if not await verified(db.url):
            return None
    began = time.perf_counter()
    await fold_usage()
    print(f"first fold of the rollups: {time.perf_counter() - began:.1f} s")
    return app, key


async def release_database(db: BenchDatabase, options: argparse.Namespace) -> None:
    await close_database()
    if options.keep:
        print(f"kept database {db.name}")
    else:
        await drop_database(options.admin_dsn, db.name)


def start_usagegraph(db: BenchDatabase, log_dir: Path, checkout: Path = ROOT) -> Server:
    """One `usagegraph serve` process on the database, of this checkout or of another one
    with a virtual environment of its own in `.venv`."""
    python = checkout_python(checkout)
    return start_server(
        lambda port: usagegraph_serve(port, python=python),
        {"DATABASE_URL": db.url},
        log_dir,
        cwd=checkout,
        checkout=checkout,
    )


async def against(
    ours: Server,
    theirs: Server,
    runner: Runner,
    key: str,
    body: dict[str, Any],
    options: argparse.Namespace,
) -> bool:
    """Interleaved rounds of this checkout's server and the `--against` one's: `--rounds`
    A/B rounds at `--clients` (B/A every other round), then as many of one sequential
    client. Prints the medians
    and the ratios; False when a request failed."""
    pair = (ours, theirs)
    loaded: dict[int, list[dict[str, float]]] = {id(s): [] for s in pair}
    single: dict[int, list[dict[str, float]]] = {id(s): [] for s in pair}
    for server in pair:  # both warm before the first round
        await runner(server.url, key, body, options.clients, 0, options.warmup)
    admin = await asyncpg.connect(options.admin_dsn)
    try:
        for clients, seconds, rounds in (
            (options.clients, options.seconds, loaded),
            (1, options.single_seconds, single),
        ):
            for number in range(options.rounds):
                # each its turn first: neither gains by its place in the rounds
                for server in pair if number % 2 == 0 else pair[::-1]:
                    rounds[id(server)].append(
                        await measured_round(
                            server,
                            runner,
                            key,
                            body,
                            clients,
                            seconds,
                            admin,
                            options.database_name,
                        )
                    )
    finally:
        await admin.close()

    mine, other = loaded[id(ours)], loaded[id(theirs)]
    one, one_other = single[id(ours)], single[id(theirs)]
    print_comparison(
        f"interleaved with {options.against} ({options.rounds} rounds, medians)",
        [
            (f"dashboards/s at {options.clients} clients", mine, other, "rate", "{:,.0f}"),
            (f"p50 at {options.clients} clients (ms)", mine, other, "p50", "{:.1f}"),
            ("server CPU per dashboard (ms)", mine, other, "server_ms", "{:.2f}"),
            ("PostgreSQL CPU per dashboard (ms)", mine, other, "pg_ms", "{:.2f}"),
            ("one client: p50 (ms)", one, one_other, "p50", "{:.2f}"),
            ("one client: p99 (ms)", one, one_other, "p99", "{:.2f}"),
        ],
    )
    print(rates_line(mine, other, options.clients))
    return not any(r["errors"] for rounds in (loaded, single) for r in rounds[id(ours)])


# -------------------------------------------------------------------------------- main


async def main() -> int:
    parser = bench_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="py-spy collapsed stacks of the server to this file")
    parser.add_argument(
        "--query",
        choices=("dashboard", "nested"),
        default="dashboard",
        help="the document sent: the whole dashboard, or the nested read of bench.dashboard_peer",
    )
    against_arguments(parser, "the query", 3)
    parser.add_argument("--single-seconds", type=float, default=10, help="one-client rounds")
    parser.add_argument(
        "--only-against", action="store_true", help="with --against: skip the floors"
    )
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also the CPU of each part of the dashboard, executed in this process",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="also each statement alone, replayed by --clients tasks: its CPU per execution"
        " in PostgreSQL and in the replaying process",
    )
    options = parsed(parser)
    if options.quick:
        options.single_seconds = 3
    load, runner = load_runner(options.load)
    db = await bench_database(options)
    server: Server | None = None
    work = Path(tempfile.mkdtemp(prefix="usagegraph_dashboard_"))
    status = 0
    try:
        prepared = await populate(db, options)
        if prepared is None:
            return 1
        app, key = prepared
        dsn = db.dsn

        query = DASHBOARD if options.query == "dashboard" else NESTED
        now = datetime.now(UTC)
        variables = {
            "id": str(app),
            "from": (now - timedelta(days=options.days)).isoformat(),
            "to": now.isoformat(),
        }
        statements = await captured_statements(db, app, query, variables)
        if options.parts:
            costs = await parts_cpu(app, variables, 20 if options.quick else 200)
            print("| part of the dashboard, executed in process | CPU per execution |")
            print("|---|---|")
            for name, cost in costs.items():
                extra = (
                    "" if name in ("whole dashboard", "name") else f" (+{cost - costs['name']:.2f})"
                )
                print(f"| {name} | {cost:.2f} ms{extra} |")
            print(f"({machine_line()})")
        await close_database()

        server = start_usagegraph(db, work)
        endpoint = server.url
        body = {"query": query, "variables": variables}
        response = await first_answer(endpoint, key, body)
        data = response.json()
        if "errors" in data:
            print("the dashboard query failed:", data["errors"])
            return 1
        application = data["data"]["application"]
        pool = application["pools"][0]
        buckets = (
            f"{len(pool['consumption']['buckets'])} DAY buckets per pool, "
            if "consumption" in pool
            else ""
        )
        print(
            f"{options.query} answer: {len(response.content):,} bytes, {len(statements)}"
            f" statements; {buckets}{len(application['endUsers']['edges'])} End Users of"
            f" {application['endUsers']['totalCount']:,}; the last 50 request log entries"
        )
        if options.against is not None:
            other = start_usagegraph(db, work, options.against.resolve())
            try:
                await first_answer(other.url, key, body)
                options.database_name = db.name
                if not await against(server, other, runner, key, body, options):
                    status = 1
            finally:
                other.stop()
            if options.only_against:
                return status
        profiler = PySpy(options.profile is not None)
        if options.profile:
            profiler.start(server.pid, Path(options.profile), options.warmup + options.seconds)
        if options.warmup > 0:
            await runner(endpoint, key, body, options.clients, 0, options.warmup)
        cpu_before = process_cpu_seconds(server.pid)
        result = await runner(endpoint, key, body, options.clients, 0, options.seconds)
        server_ms = (
            (process_cpu_seconds(server.pid) - cpu_before)
            * 1000
            / (result["rate"] * options.seconds)
        )
        await asyncio.to_thread(profiler.stop)
        if result["errors"]:
            print(f"{result['errors']} failed requests")
            status = 1
        replay = Replay(db, options.admin_dsn, options.clients)

        async def capture() -> list[Statement]:
            return await statements_now(db, app, query, variables)

        statements = await capture()
        raw = await replayed(replay, statements, options.seconds)
        bare = await bare_http(
            runner, response.content, key, body, options.clients, options.seconds
        )
        encode_ms = encoding_ms(data)
        scan = await ledger_scan(dsn, app, now - timedelta(days=options.days), now)
        billing = await billing_reads(dsn, app)
        print()
        print(
            f"| run of {now:%Y-%m-%d} ({options.end_users:,} End Users, {options.events:,}"
            f" events, {options.clients} clients, load: {load}) | per second | p50 | p99 |"
        )
        print("|---|---|---|---|")
        print(
            f"| dashboard query over HTTP, one server process | {result['rate']:,.0f}"
            f" | {result['p50']:.1f} ms | {result['p99']:.1f} ms |"
        )
        print(f"| (server process CPU per dashboard: {server_ms:.1f} ms; {machine_line()}) | | | |")
        print(
            f"| its {len(statements)} statements, raw asyncpg | {raw['rate']:,.0f}"
            f" | {raw['p50']:.1f} ms | {raw['p99']:.1f} ms |"
        )
        print(
            f"| (CPU per dashboard of the replaying process: {raw['cpu_ms']:.1f} ms, of"
            f" PostgreSQL: {raw['pg_ms']:.1f} ms) | | | |"
        )
        print(
            f"| HTTP floor: the same answer bytes from a bare Starlette endpoint, one uvicorn"
            f" process | {bare['rate']:,.0f} | {bare['p50']:.1f} ms | {bare['p99']:.1f} ms |"
        )
        print(f"| (its CPU per request: {bare['cpu_ms']:.2f} ms) | | | |")
        print(
            f"| 90 days of DAY buckets straight from the ledger (one query, alone) |"
            f" | {scan:.1f} ms | |"
        )
        for start, entries, ours, ledger in billing:
            print(
                f"| billing figures of {start:%Y-%m} ({entries:,} entries booked): rollups and"
                f" tail | | {ours:.1f} ms | |"
            )
            print(f"| (the same, straight from the ledger) | | {ledger:.1f} ms | |")
        if options.statements:
            await print_statement_costs(replay, statements, capture, options)
        verdict = result["p50"] < 50 and result["p99"] < 150
        if options.clients == 16:
            print(f"\ntarget p50 < 50 ms and p99 < 150 ms: {'met' if verdict else 'NOT met'}")
        else:
            print("\n(the target, p50 < 50 ms and p99 < 150 ms, is for 16 clients)")
        # 16 closed-loop clients waiting 50 ms each ask for 16 / 0.05 = 320 answers/s: one
        # process then has 50 / 16 ms of CPU per dashboard, at best (a core of its own).
        budget = 50 / options.clients
        floor = raw["cpu_ms"] + bare["cpu_ms"] + encode_ms
        print(
            f"one process's CPU budget per dashboard at p50 50 ms with {options.clients}"
            f" clients: {budget:.2f} ms; server now: {server_ms:.1f} ms; floor without any"
            f" GraphQL work: {floor:.1f} ms (the statements through asyncpg"
            f" {raw['cpu_ms']:.1f} + bare HTTP {bare['cpu_ms']:.2f} + encoding the answer"
            f" {encode_ms:.2f})"
        )
    finally:
        if server is not None:
            server.stop()
        await release_database(db, options)
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-bare"]:  # the HTTP floor's server process (bare_http)
        serve_bare(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(asyncio.run(main()))
