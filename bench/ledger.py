"""Consumptions per second through the ledger function on PostgreSQL, beside the same SQL
statements run by a raw asyncpg loop in the same run.

What it measures
    Phase A, the ledger: `N` concurrent asyncio tasks (default 64), each calling
    `models.ledger.consume_credits(app, "ai", EndUserRef(id=<random End User>), 1,
    "ai_generation")` in a loop, over `--end-users` End Users (default 1,000).
    Phase B, the raw baseline: as many tasks running, with plain asyncpg
    (`asyncpg.create_pool`, `conn.transaction()`), the very statements the ledger issues for
    one consumption without an idempotency key, in the same order and with the same
    arguments, so that they write exactly the rows the ledger would write (the final
    `verify_ledger()` holds them to that). The script checks at run time that both paths
    send the same statement texts (asyncpg query loggers) and prints them.
    The phases run B, A, B (more with `--rounds`), so that both see a similar database
    size. Each phase has a warm-up (`--warmup`) and then a measured window (`--seconds`):
    the rate is the consumptions that completed in the window divided by its length; p50 and
    p99 are the latencies of those consumptions. Both pools hold `--pool-size` connections
    (default max(64, tasks)); only one of them is open at a time, so that the two never
    exceed the server's connection limit together. Before the phases every End User
    consumes once through the ledger, so that its pool and End User ids are cached in the
    process (`models.references`), as in a long-running server: the ledger then sends no
    lookup statements, which the printed statement capture shows.
    By default all End Users are in one application, so every consumption updates the same
    lot and pool rows; `--applications K` spreads them over K applications (each with its
    own pool and lot) to take that shared-row contention out of the figures.

It creates a scratch database on the server named by `--admin-dsn` (default
$USAGEGRAPH_BENCH_PG, else $USAGEGRAPH_TEST_PG, else postgresql://postgres@127.0.0.1:5432/test),
migrates it, funds every End User so that the run never runs out, and drops it at the end.

Run it from the project root:

    .venv/bin/python bench/ledger.py [--seconds 10] [--tasks 64] [--end-users 1000]

The exit status is 1 when the two paths' statements differ, the rows written do not match
the consumptions completed, or `verify_ledger()` reports a problem; else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.connection import LoggedQuery

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tortoise import Tortoise, connections
from tortoise.backends.base.executor import EXECUTOR_CACHE

from api.database import apply_migrations, close_database, init_database
from api.settings import Settings
from models.accounts import create_application, create_organization
from models.draws import MAX_CREDITS_PER_OPERATION
from models.end_users import MAX_UPSERT, EndUserInput, upsert_end_users
from models.ledger import (
    allocate_credits,
    consume_credits,
    purchase_credits,
)
from models.references import EndUserRef, forget_references
from models.verify import verify_ledger

DEFAULT_ADMIN_DSN = os.environ.get(
    "USAGEGRAPH_BENCH_PG",
    os.environ.get("USAGEGRAPH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
)
POOL_KEY = "ai"
FEATURE = "ai_generation"
CREDITS = 1
TARGET_RATIO = 0.60

# ------------------------------------------------------------------ the raw baseline's SQL
# Literal copies of what `models.ledger._consume` sends (no idempotency key, no occurredAt,
# no metadata); `check_statements` compares them with what the ledger really sends.

SQL_BALANCE = (
    "UPDATE end_user_balance SET used = used + $3, remaining = remaining - $3, status ="
    " CASE WHEN remaining - $3 <= 0 THEN 'EXHAUSTED' WHEN remaining - $3 <="
    " COALESCE(COALESCE(low_balance_threshold, (SELECT end_user_low_balance_threshold"
    " FROM credit_pool WHERE credit_pool.id = pool_id)), -1) THEN 'LOW' ELSE 'OK' END,"
    " version = version + 1, updated_at = now()"
    " WHERE end_user_id = $1 AND pool_id = $2 AND remaining >= $3"
    " RETURNING end_user_id, pool_id, allocated, used, expired, remaining, status, version"
)
SQL_LIVE_ALLOCATIONS = (
    "SELECT a.id, a.lot_id, a.remaining, l.expires_at, l.purchased_at FROM allocation a"
    " JOIN credit_pack l ON l.id = a.lot_id"
    " WHERE a.end_user_id = $1 AND a.pool_id = $2 AND a.remaining > 0"
    " AND (l.expires_at IS NULL OR l.expires_at > now())"
    " ORDER BY l.expires_at ASC NULLS LAST, l.purchased_at ASC, l.id ASC"
)
SQL_ALLOCATION = "UPDATE allocation SET used = used + $2, remaining = remaining - $2 WHERE id = $1"
SQL_USAGE_EVENT = (
    "INSERT INTO usage_event (application_id, pool_id, end_user_id, credits, feature,"
    " idempotency_key, metadata, occurred_at, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()), now()) RETURNING id"
)
SQL_LEDGER_ENTRY = (
    "INSERT INTO ledger_entry (application_id, pool_id, lot_id, end_user_id, kind, amount,"
    " feature, idempotency_key, actor, usage_event_id, occurred_at, created_at) VALUES "
)
SQL_LOT = "UPDATE credit_pack SET used = used + $2 WHERE id = $1"
SQL_POOL = (
    "UPDATE credit_pool SET used = used + $2, end_user_remaining = end_user_remaining - $2,"
    " version = version + 1 WHERE id = $1 RETURNING id AS pool_id, purchased, allocated, used,"
    " expired, end_user_remaining, low_balance_threshold, version"
)
SQL_OUTBOX = (
    "INSERT INTO outbox_event (application_id, topic, payload, created_at)"
    " VALUES ($1,$2,$3, now()),($4,$5,$6, now())"
)


def _ledger_entry_sql(rows: int) -> str:
    groups = []
    for first in range(1, rows * 10 + 1, 10):
        params = ",".join(f"${i}" for i in range(first, first + 10))
        groups.append(f"({params}, now(), now())")
    return SQL_LEDGER_ENTRY + ",".join(groups)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _status(remaining: int, threshold: int | None) -> str:
    if remaining <= 0:
        return "EXHAUSTED"
    if threshold is not None and remaining <= threshold:
        return "LOW"
    return "OK"


@dataclass(frozen=True, slots=True)
class Account:
    """An End User and the application and pool its credits are in."""

    application_id: int
    pool_id: int
    end_user_id: int


async def raw_consume(conn: asyncpg.Connection, account: Account) -> None:
    """One consumption of CREDITS by the End User, as `consume_credits` writes it."""
    app_id, pool_id, end_user_id = account.application_id, account.pool_id, account.end_user_id
    async with conn.transaction():
        balance = await conn.fetchrow(SQL_BALANCE, end_user_id, pool_id, CREDITS)
        if balance is None:
            raise RuntimeError(f"End User {end_user_id} ran out of credits")
        draws: list[tuple[int, int, int]] = []  # (allocation id, lot id, credits), FIFO
        wanted = CREDITS
        for allocation in await conn.fetch(SQL_LIVE_ALLOCATIONS, end_user_id, pool_id):
            if wanted == 0:
                break
            take = min(wanted, allocation["remaining"])
            if take > 0:
                draws.append((allocation["id"], allocation["lot_id"], take))
                wanted -= take
        if wanted:
            raise RuntimeError(f"End User {end_user_id} has no live allocation left")
        for allocation_id, _, take in draws:
            await conn.execute(SQL_ALLOCATION, allocation_id, take)
        usage_event_id = await conn.fetchval(
            SQL_USAGE_EVENT, app_id, pool_id, end_user_id, CREDITS, FEATURE, None, None, None
        )
        entry_args: list[Any] = []
        for _, lot_id, take in draws:
            entry_args += [app_id, pool_id, lot_id, end_user_id, "CONSUME", -take, FEATURE]
            entry_args += [None, None, usage_event_id]
        await conn.execute(_ledger_entry_sql(len(draws)), *entry_args)
        for _, lot_id, take in draws:
            await conn.execute(SQL_LOT, lot_id, take)
        pool = await conn.fetchrow(SQL_POOL, pool_id, CREDITS)
        at = datetime.now(UTC).isoformat()
        pool_remaining = pool["purchased"] - pool["used"] - pool["expired"]
        events = [
            {
                "application_id": app_id,
                "pool_id": pool_id,
                "pool": POOL_KEY,
                "end_user_id": end_user_id,
                "version": balance["version"],
                "cause": "CONSUME",
                "at": at,
                "allocated": balance["allocated"],
                "used": balance["used"],
                "remaining": balance["remaining"],
                "expired": balance["expired"],
                "status": balance["status"],
            },
            {
                "application_id": app_id,
                "pool_id": pool_id,
                "pool": POOL_KEY,
                "end_user_id": None,
                "version": pool["version"],
                "cause": "CONSUME",
                "at": at,
                "allocated": pool["allocated"],
                "used": pool["used"],
                "remaining": pool_remaining,
                "expired": pool["expired"],
                "status": _status(pool_remaining, pool["low_balance_threshold"]),
            },
        ]
        outbox_args: list[Any] = []
        for event in events:
            outbox_args += [app_id, "balance", _dumps(event)]
        await conn.execute(SQL_OUTBOX, *outbox_args)


# ------------------------------------------------------------------------------- phases


@dataclass
class PhaseResult:
    name: str
    seconds: float
    completed: int = 0  # consumptions completed in the measured window
    total: int = 0  # consumptions completed in the whole phase (warm-up included)
    errors: int = 0
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list)
    client_cpu: float = 0.0  # client process CPU seconds per wall second in the window

    @property
    def rate(self) -> float:
        return self.completed / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_phase(
    name: str,
    consume: Callable[[Account], Awaitable[Any]],
    accounts: list[Account],
    tasks: int,
    warmup: float,
    seconds: float,
    seed: int,
) -> PhaseResult:
    """`tasks` tasks calling `consume(random End User)` until the window closes."""
    result = PhaseResult(name, seconds)
    begin = time.perf_counter()
    start = begin + warmup
    end = start + seconds

    async def worker(index: int) -> None:
        rng = random.Random(seed * 1_000 + index)  # the same draws for every phase
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            try:
                await consume(rng.choice(accounts))
            except Exception as exc:
                result.errors += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                continue
            t1 = time.perf_counter()
            result.total += 1
            if start <= t1 < end:
                result.completed += 1
                result.latencies.append(t1 - t0)

    async def cpu_meter() -> None:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        wall1, cpu1 = time.perf_counter(), time.process_time()
        result.client_cpu = (cpu1 - cpu0) / (wall1 - wall0)

    await asyncio.gather(cpu_meter(), *(worker(i) for i in range(tasks)))
    return result


async def raw_phase(
    dsn: str, accounts: list[Account], pool_size: int, args: argparse.Namespace
) -> PhaseResult:
    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
    try:

        async def consume(account: Account) -> None:
            async with pool.acquire() as conn:
                await raw_consume(conn, account)

        return await run_phase(
            "raw asyncpg",
            consume,
            accounts,
            args.tasks,
            args.warmup,
            args.seconds,
            args.seed,
        )
    finally:
        await pool.close()


def ledger_consume(account: Account) -> Awaitable[Any]:
    return consume_credits(
        account.application_id, POOL_KEY, EndUserRef(id=account.end_user_id), CREDITS, FEATURE
    )


async def ledger_phase(accounts: list[Account], args: argparse.Namespace) -> PhaseResult:
    try:
        return await run_phase(
            "ledger",
            ledger_consume,
            accounts,
            args.tasks,
            args.warmup,
            args.seconds,
            args.seed,
        )
    finally:
        await close_tortoise_pool()  # so that the raw pool can open its connections


async def close_tortoise_pool() -> None:
    """Closes the pool's connections; Tortoise reopens it on next use (the reference cache
    of `models.references` is kept)."""
    await connections.get("default").close()


# ---------------------------------------------------------------------- statement capture


class StatementLog:
    """Collects the text of every statement sent on the connections it is attached to."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def __call__(self, record: LoggedQuery) -> None:
        self.queries.append(record.query)

    async def attach(self, pool: asyncpg.Pool) -> None:
        held = [await pool.acquire() for _ in range(pool.get_max_size())]
        for conn in held:
            conn.add_query_logger(self)
        for conn in held:
            await pool.release(conn)

    async def detach(self, pool: asyncpg.Pool) -> None:
        held = [await pool.acquire() for _ in range(pool.get_max_size())]
        for conn in held:
            conn.remove_query_logger(self)
        for conn in held:
            await pool.release(conn)

    async def capture(self, work: Awaitable[Any]) -> list[str]:
        await asyncio.sleep(0.01)  # loggers run through call_soon: flush earlier ones
        self.queries.clear()
        await work
        await asyncio.sleep(0.01)
        return list(self.queries)


@dataclass
class Statements:
    ledger_uncached: list[str]
    ledger: list[str]
    raw: list[str]

    @property
    def same(self) -> bool:
        return self.ledger == self.raw


async def capture_ledger(account: Account) -> tuple[list[str], list[str]]:
    """Statements of one ledger consumption with empty reference caches, then of the next
    one for the same End User (cached pool and End User ids)."""
    await ledger_consume(account)  # opens Tortoise's pool
    pool: asyncpg.Pool = connections.get("default")._pool
    log = StatementLog()
    await log.attach(pool)
    forget_references()
    uncached = await log.capture(ledger_consume(account))
    cached = await log.capture(ledger_consume(account))
    await log.detach(pool)
    return uncached, cached


async def capture_raw(dsn: str, account: Account) -> list[str]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        log = StatementLog()
        await log.attach(pool)

        async def consume() -> None:
            async with pool.acquire() as conn:
                await raw_consume(conn, account)

        return await log.capture(consume())
    finally:
        await pool.close()


# -------------------------------------------------------------------------- the database


def database_urls(admin_dsn: str, name: str) -> tuple[str, str]:
    """(Tortoise URL, plain asyncpg DSN) of database `name` on the admin DSN's server."""
    parts = urlsplit(admin_dsn)
    plain = urlunsplit(("postgresql", parts.netloc, f"/{name}", parts.query, ""))
    return urlunsplit(("postgres", parts.netloc, f"/{name}", parts.query, "")), plain


async def create_database(admin_dsn: str) -> str:
    name = f"usagegraph_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop_database(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def open_database(settings: Settings) -> None:
    await apply_migrations(settings)
    # migrate() left Tortoise bound to its own setup: bind the models afresh, as the tests do.
    await close_database()
    await Tortoise._reset_apps()
    EXECUTOR_CACHE.clear()
    await init_database(settings)


async def fund_application(organization_id: int, number: int, end_users: int) -> list[Account]:
    """An application whose End Users each hold an equal share of one lot of credits."""
    application = await create_application(organization_id, f"bench application {number}")
    app_id = application.id
    ids: list[int] = []
    for first in range(0, end_users, MAX_UPSERT):
        batch = [
            EndUserInput(external_id=f"bench-{i}")
            for i in range(first, min(end_users, first + MAX_UPSERT))
        ]
        ids += [user.id for user in await upsert_end_users(app_id, batch)]
    purchase = await purchase_credits(app_id, POOL_KEY, MAX_CREDITS_PER_OPERATION)
    assert purchase.pool is not None
    share = MAX_CREDITS_PER_OPERATION // end_users
    for end_user_id in ids:
        await allocate_credits(app_id, POOL_KEY, EndUserRef(id=end_user_id), share)
    return [Account(app_id, purchase.pool.pool_id, i) for i in ids]


async def fund(end_users: int, applications: int) -> list[Account]:
    """`end_users` funded End Users, spread evenly over `applications` applications."""
    organization, _ = await create_organization("bench organization")
    sizes = [
        end_users // applications + (n < end_users % applications) for n in range(applications)
    ]
    funded = await asyncio.gather(
        *(fund_application(organization.id, n, size) for n, size in enumerate(sizes))
    )
    return [account for accounts in funded for account in accounts]


async def row_counts() -> dict[str, int]:
    conn = connections.get("default")
    counts = {}
    for table, where in (
        ("usage_event", ""),
        ("ledger_entry", " WHERE kind = 'CONSUME'"),
        ("outbox_event", " WHERE payload->>'cause' = 'CONSUME'"),
    ):
        rows = await conn.execute_query_dict(f"SELECT count(*) AS n FROM {table}{where}")
        counts[table] = rows[0]["n"]
    return counts


# ------------------------------------------------------------------------------- report


def _short(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= 96 else text[:93] + "..."


def _mean_rate(results: list[PhaseResult]) -> float:
    return statistics.fmean(r.rate for r in results)


def _merged(name: str, results: list[PhaseResult]) -> PhaseResult:
    merged = PhaseResult(name, sum(r.seconds for r in results))
    for r in results:
        merged.completed += r.completed
        merged.total += r.total
        merged.errors += r.errors
        merged.latencies += r.latencies
        merged.first_error = merged.first_error or r.first_error
    merged.client_cpu = statistics.fmean(r.client_cpu for r in results)
    return merged


def print_report(
    args: argparse.Namespace,
    pool_size: int,
    load: tuple[float, float],
    statements: Statements,
    ledger_runs: list[PhaseResult],
    raw_runs: list[PhaseResult],
) -> None:
    print()
    print("== usagegraph ledger benchmark: consume_credits on PostgreSQL ==")
    print(
        f"tasks {args.tasks}, End Users {args.end_users} in {args.applications} application(s),"
        f" pool size {pool_size} (both paths), warm-up {args.warmup:g} s,"
        f" window {args.seconds:g} s per phase"
    )
    before, after = load
    print(
        f"CPUs {os.cpu_count()}, load average {before:.2f} before the phases,"
        f" {after:.2f} after (other processes on the machine skew the figures)"
    )
    print()
    print("SQL statements per consumption (no idempotency key; captured on the wire):")
    for number, statement in enumerate(statements.ledger, 1):
        print(f"  {number:2}. {_short(statement)}")
    pool_resets = sum(1 for s in statements.ledger if "pg_advisory_unlock_all" in s)
    print(
        f"  = {len(statements.ledger) - pool_resets} statements in the transaction (BEGIN and"
        f" COMMIT included), plus {pool_resets} reset sent by the asyncpg pool on release"
    )
    extra = len(statements.ledger_uncached) - len(statements.ledger)
    print(
        f"  lookups: the first consumption after an empty reference cache sent {extra} more"
        " (pool and End User id SELECTs); once cached, none, as above"
    )
    print(
        "  raw asyncpg path sends the same statements in the same order: "
        + ("yes" if statements.same else "NO")
    )
    if not statements.same:
        print("  the statements that differ (update the SQL_* copies in this script):")
        for number in range(max(len(statements.ledger), len(statements.raw))):
            ledger = statements.ledger[number] if number < len(statements.ledger) else None
            raw = statements.raw[number] if number < len(statements.raw) else None
            if ledger != raw:
                print(f"  {number + 1:2}. ledger: {ledger}")
                print(f"      raw:    {raw}")
    print()
    header = f"{'phase':<14}{'cons/s':>9}{'count':>8}{'p50 ms':>9}{'p99 ms':>9}{'client CPU':>12}"
    print(header)
    print("-" * len(header))
    order = [raw_runs[0]]
    for ledger, raw in zip(ledger_runs, raw_runs[1:], strict=True):
        order += [ledger, raw]
    for r in order:
        print(
            f"{r.name:<14}{r.rate:>9.1f}{r.completed:>8}{r.percentile(0.50):>9.2f}"
            f"{r.percentile(0.99):>9.2f}{r.client_cpu:>11.0%}"
            + (f"   errors {r.errors}: {r.first_error}" if r.errors else "")
        )
    ledger_all = _merged("ledger", ledger_runs)
    raw_all = _merged("raw asyncpg", raw_runs)
    ledger_rate, raw_rate = _mean_rate(ledger_runs), _mean_rate(raw_runs)
    ratio = ledger_rate / raw_rate if raw_rate else float("nan")
    print()
    print(
        f"ledger rate {ledger_rate:.1f} consumptions/s (p50 {ledger_all.percentile(0.5):.2f} ms,"
        f" p99 {ledger_all.percentile(0.99):.2f} ms, {ledger_all.completed} measured)"
    )
    print(
        f"raw rate    {raw_rate:.1f} consumptions/s (p50 {raw_all.percentile(0.5):.2f} ms,"
        f" p99 {raw_all.percentile(0.99):.2f} ms, {raw_all.completed} measured)"
    )
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    print(f"ratio ledger/raw {ratio:.1%} ({verdict} the {TARGET_RATIO:.0%} target)")


# --------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each window")
    parser.add_argument("--tasks", type=int, default=64, help="concurrent tasks")
    parser.add_argument("--end-users", type=int, default=1_000, help="End Users drawn from")
    parser.add_argument("--pool-size", type=int, default=None, help="default max(64, tasks)")
    parser.add_argument(
        "--applications",
        type=int,
        default=1,
        help="spread the End Users over this many applications, each with its own pool and"
        " lot (1: every consumption updates the same lot and pool rows)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="ledger phases (raw: one more)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--admin-dsn",
        default=DEFAULT_ADMIN_DSN,
        help="server and database to create the scratch database from"
        " (env USAGEGRAPH_BENCH_PG or USAGEGRAPH_TEST_PG)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    if min(args.tasks, args.end_users, args.rounds, args.applications) < 1 or args.seconds <= 0:
        parser.error("tasks, end-users, applications, seconds and rounds must be positive")
    if args.applications > args.end_users:
        parser.error("at most one application per End User")
    return args


async def main() -> int:
    args = parse_args()
    pool_size = args.pool_size or max(64, args.tasks)
    name = await create_database(args.admin_dsn)
    url, dsn = database_urls(args.admin_dsn, name)
    print(f"scratch database {name}")
    try:
        settings = Settings(
            DATABASE_URL=url, USAGEGRAPH_DB_POOL_MIN=pool_size, USAGEGRAPH_DB_POOL_MAX=pool_size
        )
        await open_database(settings)
        started = time.perf_counter()
        accounts = await fund(args.end_users, args.applications)
        print(
            f"funded {len(accounts)} End Users in {args.applications} application(s) in"
            f" {time.perf_counter() - started:.1f} s"
        )
        uncached, cached = await capture_ledger(accounts[0])
        # Resolve every End User once through the ledger, as a long-running server would have.
        await asyncio.gather(*(ledger_consume(account) for account in accounts))
        await close_tortoise_pool()
        statements = Statements(uncached, cached, await capture_raw(dsn, accounts[0]))
        bench_total = 4 + len(accounts)  # captures and cache warm-up

        load_before = os.getloadavg()
        raw_runs = [await raw_phase(dsn, accounts, pool_size, args)]
        ledger_runs: list[PhaseResult] = []
        for _ in range(args.rounds):
            ledger_runs.append(await ledger_phase(accounts, args))
            raw_runs.append(await raw_phase(dsn, accounts, pool_size, args))
        load = (load_before[0], os.getloadavg()[0])
        bench_total += sum(r.total for r in raw_runs + ledger_runs)

        print_report(args, pool_size, load, statements, ledger_runs, raw_runs)
        print()
        counts = await row_counts()
        expected = {"usage_event": bench_total, "ledger_entry": bench_total}
        expected["outbox_event"] = 2 * bench_total
        rows_ok = counts == expected
        print(
            f"rows written: {counts['usage_event']} usage events, {counts['ledger_entry']}"
            f" CONSUME entries, {counts['outbox_event']} CONSUME outbox events for"
            f" {bench_total} consumptions completed: " + ("consistent" if rows_ok else "MISMATCH")
        )
        problems = await verify_ledger()
        print(
            "verify_ledger(): "
            + ("[] (every counter agrees with the ledger)" if not problems else "")
        )
        for problem in problems[:20]:
            print(f"  {problem}")
        if len(problems) > 20:
            print(f"  ... {len(problems) - 20} more")
        return 0 if statements.same and not problems and rows_ok else 1
    finally:
        await close_database()
        if args.keep:
            print(f"kept database {name}")
        else:
            await drop_database(args.admin_dsn, name)
            print(f"dropped database {name}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
