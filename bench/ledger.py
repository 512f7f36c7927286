"""Consumptions per second through the ledger function on PostgreSQL, beside the same SQL
statements run by raw asyncpg loops in the same run.

What it measures
    `consume_credits` does not open a transaction of its own: it submits to a per-application
    combiner (`models.consumption_combiner`). Concurrent calls of the process queue while a batch
    commits, and the queue commits as the next batch through `consume_credits_batch`; up to
    two batches per application are under way at once (a second one gathers and starts
    while the first commits). A batch is one transaction of a fixed number of statements,
    whatever its size: one SELECT ... FOR UPDATE locking every End User balance of the batch
    in End User order (joined to a VALUES table of its (End User, pool) pairs), one SELECT of
    their live allocations, the draws in Python, then one UPDATE end_user_balance (absolute
    values), one UPDATE allocation, one INSERT usage_event RETURNING id and one INSERT
    ledger_entry, with one VALUES row per balance, allocation drawn, item or lot drawn; then
    one UPDATE credit_pack per lot (FIFO order), one UPDATE credit_pool RETURNING per pool
    and one INSERT outbox_event with one row per End User change plus one per pool. Three
    paths run it, `--tasks` concurrent asyncio tasks each (default 64), each task consuming
    1 credit of a random End User of `--end-users` (default 1,000) and waiting for its
    result before the next:

    ledger        `models.ledger.consume_credits(app, "ai", EndUserRef(id=...), 1,
                  "ai_generation")`.
    raw combined  plain asyncpg doing what the combiner does: each task queues its
                  consumption with an asyncio future and awaits it; up to two drainer tasks
                  per application (`MAX_DRAINERS`) each take everything queued (up to 1,000)
                  and commit it as one transaction with the very statements of
                  `consume_credits_batch`, in its order (pairs and items sorted by End User,
                  pool and arrival; lots in FIFO order; one pool UPDATE; one outbox INSERT),
                  retried on a deadlock as the ledger retries. The ledger's framework
                  overhead (Tortoise, validation, result objects) is measured against this:
                  the 60% target applies to ledger / raw combined.
    raw single    plain asyncpg, one transaction per consumption holding exactly what the
                  ledger sends for a consumption made alone (a batch of one), for context.

    At run time the script captures on the wire (asyncpg query loggers) what the ledger
    sends for a consumption made alone and for a batch of 3 made together, and exits 1
    unless the raw single path sends the first and the raw combined path the second: the
    same statement texts in the same order, with the same arguments (except the generated
    usage event ids, the absolute used, remaining and version the balance UPDATE writes,
    which depend on what the End User consumed before and which `verify_ledger()` checks at
    the end, and the outbox payloads' counters and clock, of which only the End User, pool
    and cause of each row are compared). It prints them, which of them are per item (none:
    an item adds VALUES rows, not statements) and which per batch, how many VALUES
    rows each has alone and in the batch of 3, and the amortized statements per
    consumption at the batch sizes measured.

    Phases run raw single, raw combined, ledger, raw combined, raw single (`--rounds` N
    repeats the ledger / raw combined pair N times), so that each path sees a similar
    database size on average. Each phase has a warm-up (`--warmup`) and then a measured
    window (`--seconds`): the rate is the consumptions completed in the window divided by
    its length; p50 and p99 are the latencies of those consumptions (queueing for a batch
    included); the batch size is the window's consumptions divided by the COMMITs sent in it
    (a COMMIT counter is attached to every path's connections alike). Each path's pool holds
    `--pool-size` connections (default max(64, tasks)) and only one pool is open at a time.
    Before the phases every End User consumes once through the ledger, so that its pool and
    End User ids are cached in the process (`models.references`), as in a long-running
    server: the ledger then sends no lookup statements, which the statement capture shows.
    By default all End Users are in one application, so every batch updates the same lot
    and pool rows; `--applications K` spreads them over K applications (each with its own
    pool, lot and combiner).

It creates a scratch database on the server named by `--admin-dsn` (default
$USAGEGRAPH_BENCH_PG, else $USAGEGRAPH_TEST_PG, else postgresql://postgres@127.0.0.1:5432/test),
migrates it, funds every End User so that the run never runs out, and drops it at the end.
The default run takes about a minute.

Run it from the project root:

    .venv/bin/python -m bench.ledger [--seconds 8] [--tasks 64] [--end-users 1000] [--quick]

`--quick` (200 End Users, 2 s windows) checks that everything runs, the statement
comparison included.

The exit status is 1 when a raw path's statements differ from the ledger's, a consumption
fails, the rows written do not match the consumptions and transactions completed (usage
events = CONSUME entries = consumptions, each drawing on one lot; End User CONSUME outbox
events = consumptions; pool CONSUME outbox events = committed transactions), or
`verify_ledger()` reports a problem; else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from asyncpg.connection import LoggedQuery
from tortoise import connections

from api.database import PooledConnection, close_database
from api.settings import Settings
from bench.harness import (
    DEFAULT_ADMIN_DSN,
    closed_loop,
    create_database,
    database_urls,
    drop_database,
    open_database,
    percentile,
    until,
)
from models.accounts import create_application, create_organization
from models.consume_batch import MAX_BATCH
from models.consumption_combiner import MAX_DRAINERS
from models.draws import MAX_CREDITS_PER_OPERATION
from models.end_users import MAX_UPSERT, EndUserInput, upsert_end_users
from models.ledger import (
    allocate_credits,
    consume_credits,
    purchase_credits,
)
from models.references import EndUserRef, forget_references
from models.sql import MAX_ATTEMPTS
from models.verify import verify_ledger

POOL_KEY = "ai"
FEATURE = "ai_generation"
CREDITS = 1
TARGET_RATIO = 0.60
CAPTURED_BATCH = 3  # consumptions submitted together for the batch statement capture
POOL_RESET = "pg_advisory_unlock_all"  # what the asyncpg pool sends when a connection returns

# ------------------------------------------------------------------ the raw baselines' SQL
# Literal copies of what `models.consume_batch.consume_credits_batch` sends for a batch
# without idempotency keys, occurredAt or metadata; `Statements` compares them with what the
# ledger really sends. Each is sent once per batch (the lot UPDATE once per lot drawn, the
# pool UPDATE once per pool); `{table}` is the derived table of the batch's (End User, pool)
# pairs and `{rows}` a VALUES list of one row per pair, allocation drawn, usage event, entry
# or outbox event, built by `_rows` from the `*_ROW` templates as the ledger builds them.

PAIR_ROW = "(CAST({0} AS BIGINT), CAST({1} AS BIGINT))"
PAIRS_TABLE = "(SELECT column1 AS e, column2 AS p FROM (VALUES {rows}) AS pairs)"
SQL_LOCK_BALANCES = (
    "SELECT b.end_user_id, b.pool_id, b.allocated, b.used, b.expired, b.remaining,"
    " b.version, COALESCE(b.low_balance_threshold, p.end_user_low_balance_threshold)"
    " AS threshold FROM end_user_balance b JOIN {table} v"
    " ON b.end_user_id = v.e AND b.pool_id = v.p JOIN credit_pool p ON p.id = b.pool_id"
    " ORDER BY b.end_user_id, b.pool_id FOR UPDATE OF b"
)
SQL_LIVE_ALLOCATIONS = (
    "SELECT a.id, a.end_user_id, a.pool_id, a.lot_id, a.remaining, l.expires_at,"
    " l.purchased_at FROM allocation a JOIN credit_pack l ON l.id = a.lot_id JOIN {table} v"
    " ON a.end_user_id = v.e AND a.pool_id = v.p WHERE a.remaining > 0 AND"
    " (l.expires_at IS NULL OR l.expires_at > now())"
    " ORDER BY a.end_user_id, a.pool_id,"
    " l.expires_at ASC NULLS LAST, l.purchased_at ASC, l.id ASC"
)
BALANCE_ROW = (
    "(CAST({0} AS BIGINT), CAST({1} AS BIGINT), CAST({2} AS BIGINT), CAST({3} AS BIGINT),"
    " CAST({4} AS VARCHAR(16)), CAST({5} AS BIGINT))"
)
BALANCE_COLUMNS = 6  # End User, pool, then the absolute used, remaining, status, version
SQL_BALANCES = (
    "UPDATE end_user_balance SET used = v.used, remaining = v.remaining, status = v.status,"
    " version = v.version, updated_at = now() FROM (SELECT column1 AS e, column2 AS p,"
    " column3 AS used, column4 AS remaining, column5 AS status, column6 AS version"
    " FROM (VALUES {rows}) AS x) AS v"
    " WHERE end_user_balance.end_user_id = v.e AND end_user_balance.pool_id = v.p"
    " RETURNING end_user_balance.end_user_id, end_user_balance.pool_id,"
    " end_user_balance.updated_at"
)
ALLOCATION_ROW = PAIR_ROW  # allocation id, credits drawn
SQL_ALLOCATIONS = (
    "UPDATE allocation SET used = allocation.used + v.d, remaining = allocation.remaining"
    " - v.d FROM (SELECT column1 AS id, column2 AS d FROM (VALUES {rows}) AS x) AS v"
    " WHERE allocation.id = v.id"
)
USAGE_ROW = "({0},{1},{2},{3},{4},{5},{6},COALESCE({7}, now()),now())"
USAGE_COLUMNS = 8
SQL_USAGE_EVENTS = (
    "INSERT INTO usage_event (application_id, pool_id, end_user_id, credits, feature,"
    " idempotency_key, metadata, occurred_at, created_at) VALUES {rows} RETURNING id"
)
ENTRY_ROW = "({0},{1},{2},{3},{4},{5},{6},{7},{8},{9},COALESCE({10}, now()),now())"
ENTRY_COLUMNS = 11  # parameters per ledger_entry row; the 10th is the usage event id
ENTRY_USAGE_EVENT = 9
SQL_LEDGER_ENTRIES = (
    "INSERT INTO ledger_entry (application_id, pool_id, lot_id, end_user_id, kind, amount,"
    " feature, idempotency_key, actor, usage_event_id, occurred_at, created_at) VALUES {rows}"
)
SQL_LOT = "UPDATE credit_pack SET used = used + $2 WHERE id = $1"
SQL_POOL = (
    "UPDATE credit_pool SET used = used + $2, end_user_remaining = end_user_remaining - $2,"
    " version = version + 1, changed_at = now() WHERE id = $1 RETURNING id AS pool_id,"
    " purchased, allocated, used, expired, end_user_remaining, low_balance_threshold, version,"
    " changed_at AS at"
)
SQL_OUTBOX = "INSERT INTO outbox_event (application_id, topic, payload, created_at) VALUES "
# PostgreSQL errors on which the ledger retries the whole transaction (`models.sql`).
RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


def _rows(count: int, template: str, width: int) -> str:
    """`count` VALUES rows from a template of `{0}`..`{width-1}` parameter slots."""
    rows = []
    for row in range(count):
        slots = [f"${row * width + i + 1}" for i in range(width)]
        rows.append(template.format(*slots))
    return ",".join(rows)


def _values(rows: int, columns: int, suffix: str) -> str:
    groups = []
    for first in range(1, rows * columns + 1, columns):
        params = ",".join(f"${i}" for i in range(first, first + columns))
        groups.append(f"({params}{suffix})")
    return ",".join(groups)


def _prefix(template: str) -> str:
    """A statement template's text before its first `{table}` or `{rows}`."""
    return template.split("{", 1)[0]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()  # as models/outbox.py encodes a payload


def _status(remaining: int, threshold: int | None) -> str:
    if remaining <= 0:
        return "EXHAUSTED"
    if threshold is not None and remaining <= threshold:
        return "LOW"
    return "OK"


def _event(account: Account, row: Any, at: str, *, pool: bool) -> dict[str, Any]:
    """The outbox payload of `models.balances._event` for an End User snapshot (a dict) or a
    pool row (the pool UPDATE's RETURNING)."""
    remaining = row["purchased"] - row["used"] - row["expired"] if pool else row["remaining"]
    return {
        "application_id": account.application_id,
        "pool_id": account.pool_id,
        "pool": POOL_KEY,
        "end_user_id": None if pool else row["end_user_id"],
        "version": row["version"],
        "cause": "CONSUME",
        "at": at,
        "allocated": row["allocated"],
        "used": row["used"],
        "remaining": remaining,
        "expired": row["expired"],
        "status": _status(remaining, row["low_balance_threshold"]) if pool else row["status"],
    }


@dataclass(frozen=True, slots=True)
class Account:
    """An End User and the application and pool its credits are in."""

    application_id: int
    pool_id: int
    end_user_id: int


class OutOfCredits(RuntimeError):
    pass


@dataclass(slots=True)
class _Allocation:
    id: int
    lot_id: int
    remaining: int
    drawn: int = 0


@dataclass(slots=True)
class _Held:
    """One locked End User balance as the batch moves it (written back once at the end)."""

    allocated: int
    used: int
    expired: int
    remaining: int
    version: int
    threshold: int | None
    allocations: list[_Allocation] = field(default_factory=list)  # live ones, FIFO order


def _take_fifo(allocations: list[_Allocation], credits: int) -> list[tuple[_Allocation, int]]:
    """`models.draws.take_fifo`: `credits` split over the allocations in FIFO order, [] if
    they do not hold enough."""
    draws: list[tuple[_Allocation, int]] = []
    wanted = credits
    for allocation in allocations:
        if wanted == 0:
            break
        take = min(wanted, allocation.remaining)
        if take > 0:
            draws.append((allocation, take))
            wanted -= take
    return draws if wanted == 0 else []


async def raw_consume_items(
    conn: asyncpg.Connection, accounts: list[Account]
) -> list[Exception | None]:
    """In the caller's transaction, one consumption of CREDITS per account (all of one
    application), as `consume_credits_batch` writes them: None for each that succeeded,
    else its error (it changed nothing)."""
    outcome: list[Exception | None] = [None] * len(accounts)
    order = sorted(
        range(len(accounts)),
        key=lambda i: (accounts[i].end_user_id, accounts[i].pool_id, i),
    )
    pairs = sorted({(account.end_user_id, account.pool_id) for account in accounts})
    flat = [value for pair in pairs for value in pair]
    table = PAIRS_TABLE.replace("{rows}", _rows(len(pairs), PAIR_ROW, 2))
    # One ordered lock of every balance, one read of every live allocation.
    held: dict[tuple[int, int], _Held] = {}
    for row in await conn.fetch(SQL_LOCK_BALANCES.replace("{table}", table), *flat):
        held[(row["end_user_id"], row["pool_id"])] = _Held(
            row["allocated"],
            row["used"],
            row["expired"],
            row["remaining"],
            row["version"],
            row["threshold"],
        )
    fifo_keys: dict[int, tuple[Any, ...]] = {}
    for row in await conn.fetch(SQL_LIVE_ALLOCATIONS.replace("{table}", table), *flat):
        held[(row["end_user_id"], row["pool_id"])].allocations.append(
            _Allocation(row["id"], row["lot_id"], row["remaining"])
        )
        expires_at = row["expires_at"]
        fifo_keys[row["lot_id"]] = (
            expires_at is None,
            expires_at or "",
            row["purchased_at"],
            row["lot_id"],
        )
    # The draws, in Python, item by item in lock order.
    # (account, [(lot id, credits)] in FIFO order, End User snapshot after the item)
    applied: list[tuple[Account, list[tuple[int, int]], dict[str, Any]]] = []
    for index in order:
        account = accounts[index]
        balance = held.get((account.end_user_id, account.pool_id))
        draws = (
            _take_fifo(balance.allocations, CREDITS)
            if balance is not None and balance.remaining >= CREDITS
            else []
        )
        if balance is None or not draws:
            outcome[index] = OutOfCredits(f"End User {account.end_user_id} ran out of credits")
            continue
        for allocation, take in draws:
            allocation.remaining -= take
            allocation.drawn += take
        balance.used += CREDITS
        balance.remaining -= CREDITS
        balance.version += 1
        snapshot = {
            "end_user_id": account.end_user_id,
            "allocated": balance.allocated,
            "used": balance.used,
            "expired": balance.expired,
            "remaining": balance.remaining,
            "status": _status(balance.remaining, balance.threshold),
            "version": balance.version,
        }
        applied.append((account, [(a.lot_id, take) for a, take in draws], snapshot))
    if not applied:
        return outcome
    # One write each: balances (absolute values), allocations, usage events, entries.
    moved = [(pair, h) for pair, h in held.items() if any(a.drawn for a in h.allocations)]
    args: list[Any] = []
    for (end_user_id, pool_id), h in moved:
        args += [end_user_id, pool_id, h.used, h.remaining, _status(h.remaining, h.threshold)]
        args.append(h.version)
    rows = _rows(len(moved), BALANCE_ROW, BALANCE_COLUMNS)
    await conn.fetch(SQL_BALANCES.replace("{rows}", rows), *args)
    drawn = [a for _, h in moved for a in h.allocations if a.drawn]
    rows = _rows(len(drawn), ALLOCATION_ROW, 2)
    await conn.execute(
        SQL_ALLOCATIONS.replace("{rows}", rows), *(v for a in drawn for v in (a.id, a.drawn))
    )
    args = []
    for account, _, _ in applied:
        args += [account.application_id, account.pool_id, account.end_user_id, CREDITS]
        args += [FEATURE, None, None, None]
    rows = _rows(len(applied), USAGE_ROW, USAGE_COLUMNS)
    usage_ids = sorted(
        r["id"] for r in await conn.fetch(SQL_USAGE_EVENTS.replace("{rows}", rows), *args)
    )
    args = []
    for (account, draws, _), usage_event_id in zip(applied, usage_ids, strict=True):
        for lot_id, take in draws:
            args += [account.application_id, account.pool_id, lot_id, account.end_user_id]
            args += ["CONSUME", -take, FEATURE, None, None, usage_event_id, None]
    rows = _rows(len(args) // ENTRY_COLUMNS, ENTRY_ROW, ENTRY_COLUMNS)
    await conn.execute(SQL_LEDGER_ENTRIES.replace("{rows}", rows), *args)
    # Once per lot (FIFO order) and per pool (id order), then the pool's balance events.
    by_lot: dict[int, int] = defaultdict(int)
    by_pool: dict[int, int] = defaultdict(int)
    for account, draws, _ in applied:
        for lot_id, take in draws:
            by_lot[lot_id] += take
        by_pool[account.pool_id] += CREDITS
    for lot_id in sorted(by_lot, key=fifo_keys.__getitem__):
        await conn.execute(SQL_LOT, lot_id, by_lot[lot_id])
    for pool_id in sorted(by_pool):
        pool = await conn.fetchrow(SQL_POOL, pool_id, by_pool[pool_id])
        at = pool["at"].isoformat()
        in_pool = [
            (account, snapshot) for account, _, snapshot in applied if account.pool_id == pool_id
        ]
        events = [_event(account, snapshot, at, pool=False) for account, snapshot in in_pool]
        events.append(_event(in_pool[0][0], pool, at, pool=True))
        outbox_args: list[Any] = []
        for event in events:
            outbox_args += [event["application_id"], "balance", _dumps(event)]
        await conn.execute(SQL_OUTBOX + _values(len(events), 3, ", now()"), *outbox_args)
    return outcome


async def raw_pool(dsn: str, size: int) -> asyncpg.Pool:
    """A plain asyncpg pool whose connections return without a reset statement, as the
    server's do (`api.database.PooledConnection`)."""
    return await asyncpg.create_pool(
        dsn, min_size=size, max_size=size, connection_class=PooledConnection
    )


async def raw_transaction(pool: asyncpg.Pool, accounts: list[Account]) -> list[Exception | None]:
    """`raw_consume_items` in a transaction of its own, retried from the start on a deadlock
    or serialization failure as `models.sql.transaction` retries."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    return await raw_consume_items(conn, accounts)
        except RETRYABLE:
            if attempt == MAX_ATTEMPTS:
                raise
            await asyncio.sleep(0.005 * attempt)
    raise AssertionError("unreachable")


async def raw_single(pool: asyncpg.Pool, account: Account) -> None:
    """One consumption in a transaction of its own: the ledger's batch of one."""
    (error,) = await raw_transaction(pool, [account])
    if error is not None:
        raise error


class RawCombiner:
    """`models.consumption_combiner._Combiner` in plain asyncpg: one application's consumptions
    queue while batches commit, and the queue commits as the next batch; up to MAX_DRAINERS
    batches are under way at once (a second one gathers and starts while the first
    commits), each taking everything queued, up to MAX_BATCH."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.waiting: list[tuple[Account, asyncio.Future[None]]] = []
        self.drainers: set[asyncio.Task[None]] = set()

    async def submit(self, account: Account) -> None:
        result: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((account, result))
        if len(self.drainers) < MAX_DRAINERS:
            self.drainers.add(asyncio.create_task(self._drain()))
        await result

    def _next_batch(self) -> list[tuple[Account, asyncio.Future[None]]]:
        """Up to MAX_BATCH waiting calls, dropping those whose caller went away."""
        live = [waiting for waiting in self.waiting if not waiting[1].done()]
        batch, self.waiting = live[:MAX_BATCH], live[MAX_BATCH:]
        return batch

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    outcome = await raw_transaction(self.pool, [a for a, _ in batch])
                except Exception as error:  # the whole transaction failed
                    for _, result in batch:
                        if not result.done():
                            result.set_exception(error)
                    continue
                for (_, result), error in zip(batch, outcome, strict=True):
                    if result.done():
                        continue
                    if error is None:
                        result.set_result(None)
                    else:
                        result.set_exception(error)
        finally:
            current = asyncio.current_task()
            if current is not None:
                self.drainers.discard(current)  # type: ignore[arg-type]
            if not self.drainers:
                for _, result in self.waiting:  # only when the drainers were cancelled
                    if not result.done():
                        result.cancel()
                self.waiting = []


def raw_combined(pool: asyncpg.Pool) -> Callable[[Account], Awaitable[None]]:
    """A consume function that submits to one RawCombiner per application."""
    combiners: dict[int, RawCombiner] = {}

    def consume(account: Account) -> Awaitable[None]:
        combiner = combiners.get(account.application_id)
        if combiner is None:
            combiner = combiners[account.application_id] = RawCombiner(pool)
        return combiner.submit(account)

    return consume


def ledger_consume(account: Account) -> Awaitable[Any]:
    return consume_credits(
        account.application_id, POOL_KEY, EndUserRef(id=account.end_user_id), CREDITS, FEATURE
    )


# ------------------------------------------------------------------------ query loggers


async def attach(pool: asyncpg.Pool, logger: Callable[[LoggedQuery], None]) -> None:
    """Adds `logger` to every connection of the pool (opening them all)."""
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    for conn in held:
        conn.add_query_logger(logger)
    for conn in held:
        await pool.release(conn)


async def detach(pool: asyncpg.Pool, logger: Callable[[LoggedQuery], None]) -> None:
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    for conn in held:
        conn.remove_query_logger(logger)
    for conn in held:
        await pool.release(conn)


async def flush_loggers() -> None:
    await asyncio.sleep(0.01)  # loggers run through call_soon


class CommitLog:
    """When each transaction committed (a COMMIT that succeeded)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, record: LoggedQuery) -> None:
        if record.exception is None and record.query == "COMMIT;":
            self.times.append(time.perf_counter())


class StatementLog:
    """Every statement sent on the connections it is attached to."""

    def __init__(self) -> None:
        self.records: list[LoggedQuery] = []

    def __call__(self, record: LoggedQuery) -> None:
        self.records.append(record)

    async def capture(self, work: Callable[[], Awaitable[Any]]) -> list[LoggedQuery]:
        """The statements sent while `work()` runs (started only once earlier ones are in:
        `asyncio.gather` would start its tasks at once)."""
        await flush_loggers()
        self.records.clear()
        await work()
        await flush_loggers()
        return list(self.records)


def commits(records: list[LoggedQuery]) -> int:
    return sum(1 for r in records if r.exception is None and r.query == "COMMIT;")


def signature(record: LoggedQuery) -> tuple[str, Any]:
    """A statement's text and the arguments that are the same on every path: the usage
    event ids are the database's; the balance UPDATE's absolute used, remaining and version
    depend on what the End User consumed before (`verify_ledger()` checks them against the
    ledger at the end); of the outbox payloads only the End User, pool and cause of each
    row are fixed."""
    query, args = record.query, tuple(record.args or ())
    if query.startswith(_prefix(SQL_LEDGER_ENTRIES)):
        args = tuple(
            "<usage event id>" if i % ENTRY_COLUMNS == ENTRY_USAGE_EVENT else a
            for i, a in enumerate(args)
        )
    elif query.startswith(_prefix(SQL_BALANCES)):
        counters = {2: "<used>", 3: "<remaining>", 5: "<version>"}
        args = tuple(counters.get(i % BALANCE_COLUMNS, a) for i, a in enumerate(args))
    elif query.startswith(SQL_OUTBOX):
        rows = []
        for i in range(0, len(args), 3):
            payload = json.loads(args[i + 2])
            rows.append((args[i], args[i + 1], payload["pool_id"], payload["end_user_id"]))
            rows[-1] += (payload["cause"],)
        args = tuple(rows)
    return query, args


def kind(statement: str) -> str:
    """The statement without its VALUES list and arguments (an outbox INSERT of any size)."""
    return " ".join(statement.split()[:3])


@dataclass
class Statements:
    ledger_uncached: list[LoggedQuery]
    ledger_alone: list[LoggedQuery]
    ledger_batch: list[LoggedQuery]  # CAPTURED_BATCH consumptions submitted together
    raw_single: list[LoggedQuery]
    raw_batch: list[LoggedQuery]

    @property
    def single_same(self) -> bool:
        return [signature(r) for r in self.ledger_alone] == [signature(r) for r in self.raw_single]

    @property
    def combined_same(self) -> bool:
        return [signature(r) for r in self.ledger_batch] == [signature(r) for r in self.raw_batch]

    def per_item(self) -> set[str]:
        """Kinds of statement sent once per consumption (the others once per batch)."""
        alone = [kind(r.query) for r in self.ledger_alone]
        batch = [kind(r.query) for r in self.ledger_batch]
        return {k for k in set(alone) if batch.count(k) == CAPTURED_BATCH * alone.count(k)}

    def counts(self) -> tuple[int, int, int]:
        """(per item, per batch in the transaction, per batch after it: the pool reset)."""
        items = self.per_item()
        item = sum(1 for r in self.ledger_alone if kind(r.query) in items)
        reset = sum(1 for r in self.ledger_alone if POOL_RESET in r.query)
        return item, len(self.ledger_alone) - item - reset, reset


async def capture_ledger(
    accounts: list[Account], batch: list[Account]
) -> tuple[list[LoggedQuery], list[LoggedQuery], list[LoggedQuery], int]:
    """Statements of a ledger consumption made alone with empty reference caches, then of
    the next one (cached pool and End User ids), and of CAPTURED_BATCH consumptions
    submitted together; between them every End User consumes once, so that all are cached.
    Also answers the transactions committed."""
    await ledger_consume(accounts[0])  # alone: opens Tortoise's pool
    pool: asyncpg.Pool = connections.get("default")._pool
    log = StatementLog()
    await attach(pool, log)
    forget_references()
    uncached = await log.capture(lambda: ledger_consume(accounts[0]))
    alone = await log.capture(lambda: ledger_consume(accounts[0]))
    warm = await log.capture(lambda: asyncio.gather(*(ledger_consume(a) for a in accounts)))
    together = await log.capture(lambda: asyncio.gather(*(ledger_consume(a) for a in batch)))
    await detach(pool, log)
    await close_tortoise_pool()
    return uncached, alone, together, 1 + commits(uncached + alone + warm + together)


async def capture_raw(
    dsn: str, account: Account, batch: list[Account]
) -> tuple[list[LoggedQuery], list[LoggedQuery]]:
    pool = await raw_pool(dsn, 1)
    try:
        log = StatementLog()
        await attach(pool, log)
        single = await log.capture(lambda: raw_single(pool, account))
        consume = raw_combined(pool)
        together = await log.capture(lambda: asyncio.gather(*(consume(a) for a in batch)))
        return single, together
    finally:
        await pool.close()


# ------------------------------------------------------------------------------- phases


@dataclass
class PhaseResult:
    name: str
    seconds: float
    completed: int = 0  # consumptions completed in the measured window
    total: int = 0  # consumptions completed in the whole phase (warm-up included)
    commits: int = 0  # transactions committed in the measured window
    commits_total: int = 0  # transactions committed in the whole phase
    errors: int = 0
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list)
    client_cpu: float = 0.0  # client process CPU seconds per wall second in the window

    @property
    def rate(self) -> float:
        return self.completed / self.seconds

    @property
    def batch(self) -> float:
        """Mean consumptions per transaction in the window."""
        return self.completed / self.commits if self.commits else float("nan")

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


async def run_phase(
    name: str,
    consume: Callable[[Account], Awaitable[Any]],
    commit_log: CommitLog,
    accounts: list[Account],
    args: argparse.Namespace,
) -> PhaseResult:
    """`args.tasks` tasks calling `consume(random End User)` until the window closes."""
    result = PhaseResult(name, args.seconds)
    commit_log.times.clear()

    async def cpu_meter(start: float, end: float) -> None:
        await until(start)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await until(end)
        wall1, cpu1 = time.perf_counter(), time.process_time()
        result.client_cpu = (cpu1 - cpu0) / (wall1 - wall0)

    loop = await closed_loop(
        consume, accounts, args.tasks, args.warmup, args.seconds, args.seed, cpu_meter
    )
    result.completed, result.total, result.latencies = loop.completed, loop.total, loop.latencies
    result.errors, result.first_error = loop.errors, loop.first_error
    await flush_loggers()
    result.commits = sum(1 for t in commit_log.times if loop.start <= t < loop.end)
    result.commits_total = len(commit_log.times)
    return result


async def raw_phase(
    name: str, dsn: str, accounts: list[Account], pool_size: int, args: argparse.Namespace
) -> PhaseResult:
    pool = await raw_pool(dsn, pool_size)
    try:
        commit_log = CommitLog()
        await attach(pool, commit_log)
        if name == "raw single":

            def consume(account: Account) -> Awaitable[None]:
                return raw_single(pool, account)

        else:
            consume = raw_combined(pool)
        return await run_phase(name, consume, commit_log, accounts, args)
    finally:
        await pool.close()


async def ledger_phase(accounts: list[Account], args: argparse.Namespace) -> PhaseResult:
    client = connections.get("default")
    try:
        await client.execute_query("SELECT 1")  # opens Tortoise's pool
        commit_log = CommitLog()
        await attach(client._pool, commit_log)
        return await run_phase("ledger", ledger_consume, commit_log, accounts, args)
    finally:
        await close_tortoise_pool()  # so that the raw pool can open its connections


async def close_tortoise_pool() -> None:
    """Closes the pool's connections; Tortoise reopens it on next use (the reference cache
    of `models.references` is kept)."""
    await connections.get("default").close()


# -------------------------------------------------------------------------- the database


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
    consume_event = (
        "FROM outbox_event WHERE payload->>'cause' = 'CONSUME' AND payload->>'end_user_id'"
    )
    rows = await conn.execute_query_dict(
        "SELECT (SELECT count(*) FROM usage_event) AS usage_events,"
        " (SELECT count(*) FROM ledger_entry WHERE kind = 'CONSUME') AS consume_entries,"
        f" (SELECT count(*) {consume_event} IS NOT NULL) AS end_user_events,"
        f" (SELECT count(*) {consume_event} IS NULL) AS pool_events"
    )
    return dict(rows[0])


# ------------------------------------------------------------------------------- report


def _short(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= 92 else text[:89] + "..."


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _merged(name: str, results: list[PhaseResult]) -> PhaseResult:
    merged = PhaseResult(name, sum(r.seconds for r in results))
    for r in results:
        merged.completed += r.completed
        merged.total += r.total
        merged.commits += r.commits
        merged.commits_total += r.commits_total
        merged.errors += r.errors
        merged.latencies += r.latencies
        merged.first_error = merged.first_error or r.first_error
    merged.client_cpu = _mean([r.client_cpu for r in results])
    return merged


def _print_differences(what: str, ledger: list[LoggedQuery], raw: list[LoggedQuery]) -> None:
    print(f"  {what}: the statements that differ (update the SQL_* copies in this script):")
    for number in range(max(len(ledger), len(raw))):
        mine = signature(ledger[number]) if number < len(ledger) else None
        theirs = signature(raw[number]) if number < len(raw) else None
        if mine != theirs:
            print(f"  {number + 1:3}. ledger: {mine}")
            print(f"       raw:    {theirs}")


def _value_rows(statement: str) -> int | None:
    """Rows of the statement's VALUES list (None without one)."""
    return statement.count("),(") + 1 if "VALUES" in statement else None


def _rows_in_batch(statements: Statements) -> list[str]:
    """Per statement of the batch of one: its VALUES rows alone -> in the batch of
    CAPTURED_BATCH (the same kind of statement, same occurrence), or ''."""
    in_batch: dict[str, list[int | None]] = defaultdict(list)
    for record in statements.ledger_batch:
        in_batch[kind(record.query)].append(_value_rows(record.query))
    seen: dict[str, int] = defaultdict(int)
    shown = []
    for record in statements.ledger_alone:
        k = kind(record.query)
        alone = _value_rows(record.query)
        occurrence = seen[k]
        seen[k] += 1
        there = in_batch[k][occurrence] if occurrence < len(in_batch[k]) else None
        shown.append("" if alone is None else f"{alone} -> {there}")
    return shown


def print_statements(statements: Statements, ledger: PhaseResult, combined: PhaseResult) -> None:
    print("SQL statements (no idempotency key; captured on the wire):")
    print(
        "  a consumption made alone, i.e. a batch of one (the raw single path's transaction),"
        f" with the VALUES rows of each statement alone -> in a batch of {CAPTURED_BATCH}:"
    )
    items = statements.per_item()
    rows = _rows_in_batch(statements)
    for number, record in enumerate(statements.ledger_alone, 1):
        if POOL_RESET in record.query:
            role = "reset"
        else:
            role = "item" if kind(record.query) in items else "batch"
        print(f"  {number:3}. [{role:<5}] {rows[number - 1]:>6} {_short(record.query)}")
    item, batch, reset = statements.counts()
    print(
        f"  = {item} statements per consumption and {batch} per batch in the transaction"
        " (BEGIN; one SELECT locking every balance in End User order; one SELECT of the live"
        " allocations; one UPDATE each of the balances and the allocations drawn; one INSERT"
        " each of the usage events and the ledger entries; one lot UPDATE per lot drawn; one"
        f" pool UPDATE per pool; the outbox INSERT; COMMIT), plus {reset} reset sent by the"
        " asyncpg pool on release. A consumption adds VALUES rows, not statements: one per"
        " End User balance, allocation drawn, usage event, ledger entry (one per lot drawn)"
        " and End User outbox event"
    )
    sent = len(statements.ledger_batch)
    formula = (
        f"the same {batch} + {reset} as alone, with longer VALUES lists"
        if item == 0
        else f"{batch} + {CAPTURED_BATCH} x {item} + {reset}"
    )
    print(
        f"  a batch of {CAPTURED_BATCH} submitted together sent {sent} statements"
        + (
            f" = {formula}"
            if sent == batch + CAPTURED_BATCH * item + reset
            else f" (NOT {formula})"
        )
        + f" (its outbox INSERT has {CAPTURED_BATCH + 1} rows: one per End User change, one"
        " for the pool)"
    )
    print("  amortized statements per consumption at the measured batch sizes:")
    for r in (ledger, combined):
        print(
            f"    {r.name:<13} {r.batch:7.1f} consumptions per transaction:"
            f" {item} + {batch}/{r.batch:.1f} = {item + batch / r.batch:.2f} in transactions"
            f" (+{reset / r.batch:.2f} reset)"
        )
    print(
        f"    {'raw single':<13} {1:7.1f} consumption per transaction:"
        f" {item} + {batch} = {item + batch} (+{reset} reset)"
    )
    extra = len(statements.ledger_uncached) - len(statements.ledger_alone)
    print(
        f"  lookups: the first consumption after an empty reference cache sent {extra} more"
        " (pool and End User id SELECTs); once cached, none, as above"
    )
    print(
        "  raw single path sends the statements of the ledger's batch of one, same order and"
        " arguments: " + ("yes" if statements.single_same else "NO")
    )
    if not statements.single_same:
        _print_differences("raw single", statements.ledger_alone, statements.raw_single)
    print(
        f"  raw combined path sends the statements of the ledger's batch of {CAPTURED_BATCH},"
        " same order and arguments: " + ("yes" if statements.combined_same else "NO")
    )
    if not statements.combined_same:
        _print_differences("raw combined", statements.ledger_batch, statements.raw_batch)


def print_report(
    args: argparse.Namespace,
    pool_size: int,
    load: tuple[float, float],
    statements: Statements,
    runs: list[PhaseResult],
) -> None:
    by_name = {
        name: [r for r in runs if r.name == name]
        for name in ("ledger", "raw combined", "raw single")
    }
    merged = {name: _merged(name, results) for name, results in by_name.items()}
    rates = {name: _mean([r.rate for r in results]) for name, results in by_name.items()}
    print()
    print("== usagegraph ledger benchmark: consume_credits on PostgreSQL ==")
    print(
        f"tasks {args.tasks}, End Users {args.end_users} in {args.applications} application(s),"
        f" pool size {pool_size} (every path), warm-up {args.warmup:g} s,"
        f" window {args.seconds:g} s per phase"
    )
    before, after = load
    print(
        f"CPUs {os.cpu_count()}, load average {before:.2f} before the phases,"
        f" {after:.2f} after (other processes on the machine skew the figures)"
    )
    print()
    print_statements(statements, merged["ledger"], merged["raw combined"])
    print()
    header = (
        f"{'phase':<14}{'cons/s':>9}{'count':>8}{'batch':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'client CPU':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        print(
            f"{r.name:<14}{r.rate:>9.1f}{r.completed:>8}{r.batch:>8.1f}{r.percentile(0.50):>9.2f}"
            f"{r.percentile(0.99):>9.2f}{r.client_cpu:>11.0%}"
            + (f"   errors {r.errors}: {r.first_error}" if r.errors else "")
        )
    print("(batch: consumptions per transaction in the window, from the COMMITs sent)")
    print()
    for name in ("ledger", "raw combined", "raw single"):
        m = merged[name]
        print(
            f"{name:<13} {rates[name]:7.1f} consumptions/s (p50 {m.percentile(0.5):.2f} ms,"
            f" p99 {m.percentile(0.99):.2f} ms, batch {m.batch:.1f}, {m.completed} measured)"
        )
    ratio = rates["ledger"] / rates["raw combined"] if rates["raw combined"] else float("nan")
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    print(
        f"ratio ledger / raw combined {ratio:.1%} ({verdict} the {TARGET_RATIO:.0%} target;"
        " the same batched SQL)"
    )
    context = rates["ledger"] / rates["raw single"] if rates["raw single"] else float("nan")
    print(
        f"ratio ledger / raw single   {context:.1%} (context: one transaction per consumption,"
        " no combiner)"
    )


# --------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each window")
    parser.add_argument("--tasks", type=int, default=64, help="concurrent tasks")
    parser.add_argument("--end-users", type=int, default=1_000, help="End Users drawn from")
    parser.add_argument("--pool-size", type=int, default=None, help="default max(64, tasks)")
    parser.add_argument(
        "--applications",
        type=int,
        default=1,
        help="spread the End Users over this many applications, each with its own pool, lot"
        " and combiner (1: every batch updates the same lot and pool rows)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="ledger / raw combined pairs (default 1)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--admin-dsn",
        default=DEFAULT_ADMIN_DSN,
        help="server and database to create the scratch database from"
        " (env USAGEGRAPH_BENCH_PG or USAGEGRAPH_TEST_PG)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--quick", action="store_true", help="small and short: checks it runs")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.end_users = 2.0, 1.0, 200
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
        # CAPTURED_BATCH End Users of one application, not in id order (repeated if fewer).
        same_app = [a for a in accounts if a.application_id == accounts[0].application_id]
        batch = [same_app[i % len(same_app)] for i in (2, 0, 1)][:CAPTURED_BATCH]
        uncached, alone, together, ledger_commits = await capture_ledger(accounts, batch)
        raw_alone, raw_together = await capture_raw(dsn, accounts[0], batch)
        statements = Statements(uncached, alone, together, raw_alone, raw_together)
        # consumptions and transactions of the captures and the cache warm-up
        consumed = 3 + len(accounts) + 2 * len(batch) + 1
        transactions = ledger_commits + commits(raw_alone + raw_together)

        load_before = os.getloadavg()
        runs = [
            await raw_phase("raw single", dsn, accounts, pool_size, args),
            await raw_phase("raw combined", dsn, accounts, pool_size, args),
        ]
        for _ in range(args.rounds):
            runs.append(await ledger_phase(accounts, args))
            runs.append(await raw_phase("raw combined", dsn, accounts, pool_size, args))
        runs.append(await raw_phase("raw single", dsn, accounts, pool_size, args))
        load = (load_before[0], os.getloadavg()[0])
        consumed += sum(r.total for r in runs)
        transactions += sum(r.commits_total for r in runs)
        errors = sum(r.errors for r in runs)

        print_report(args, pool_size, load, statements, runs)
        print()
        counts = await row_counts()
        expected = {
            "usage_events": consumed,
            "consume_entries": consumed,
            "end_user_events": consumed,
            "pool_events": transactions,
        }
        rows_ok = counts == expected
        print(
            f"rows written: {counts['usage_events']} usage events, {counts['consume_entries']}"
            f" CONSUME entries, {counts['end_user_events']} End User CONSUME outbox events for"
            f" {consumed} consumptions completed; {counts['pool_events']} pool CONSUME outbox"
            f" events for {transactions} transactions committed: "
            + ("consistent" if rows_ok else "MISMATCH")
        )
        if errors:
            print(f"consumptions failed: {errors}")
        problems = await verify_ledger()
        print(
            "verify_ledger(): "
            + ("[] (every counter agrees with the ledger)" if not problems else "")
        )
        for problem in problems[:20]:
            print(f"  {problem}")
        if len(problems) > 20:
            print(f"  ... {len(problems) - 20} more")
        same = statements.single_same and statements.combined_same
        return 0 if same and rows_ok and not errors and not problems else 1
    finally:
        await close_database()
        if args.keep:
            print(f"kept database {name}")
        else:
            await drop_database(args.admin_dsn, name)
            print(f"dropped database {name}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
