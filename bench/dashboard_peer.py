"""The nested dashboard read against its peer: one `usagegraph serve` process and one
PostGraphile 5 process over the same PostgreSQL database, the same data, the same load.

The nested query, written for each API: one application's pools, its first 50 End Users
with their balances, and its 50 newest request-log entries. PostGraphile (the amber preset
with its default inflection, `bench/postgraphile/graphile.config.mjs`, a pool of 10) gets
the fields usagegraph computes (a pool's remaining, unallocated and status, a balance's
effective threshold) as computed-column functions in the schema `postgraphile_computed`
(`bench/postgraphile/computed.sql`), and the request log's application as a virtual
foreign key. It runs on Node 22 installed from npm as a package (`npm ci` in
`bench/postgraphile/` when its node_modules is absent). PostGraphile runs as the
database owner with no tenant checks: it is the peer's speed, not a setup to deploy.

Before any timing, both answers must carry the same numbers for every row of the page
(exit 1 otherwise). Then, interleaved A/B/A/B/A/B:
    16 clients    `--rounds` rounds of `--seconds` each per system (wrk, or httpx):
                  requests/s, p50, p99, the server process's CPU per request (/proc) and
                  PostgreSQL's: the CPU of the database's backends serving that system
                  (/proc of each backend, PostGraphile's told apart by application_name).
                  usagegraph runs as shipped: its request log records every request and
                  its background jobs run, both counted in its figures.
    one client    `--rounds` rounds of `--single-seconds`: p50 of sequential requests.
Medians of the rounds are printed per system with the ratios (usagegraph / PostGraphile),
beside the floors of usagegraph's answer as `bench.dashboard` measures them: its
statements replayed by raw asyncpg and the same answer bytes from a bare HTTP endpoint.

    .venv/bin/python -m bench.dashboard_peer [--quick] [--database NAME] [--clients 16]
        [--seconds 20] [--single-seconds 10] [--rounds 3]

Data as `bench.dashboard` generates it (ANALYZE included); `--keep` and `--database NAME`
as there (generate once with `python -m bench.dashboard --keep`, then compare with `--database`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.dashboard import (
    BenchDatabase,
    Replay,
    bare_http,
    bench_arguments,
    bench_database,
    captured_statements,
    close_database,
    measured_round,
    parsed,
    populate,
    release_database,
    replayed,
    start_usagegraph,
)
from bench.dashboard_query import NESTED
from bench.harness import (
    Body,
    Runner,
    Server,
    first_answer,
    load_runner,
    machine_line,
    start_server,
)

PEER = Path(__file__).resolve().parent / "postgraphile"
PEER_APPLICATION_NAME = "postgraphile_peer"  # how its PostgreSQL backends are told apart

# The same selection in PostGraphile's amber naming (computed columns: remaining,
# unallocated, status, effectiveThreshold).
PEER_NESTED = """
query Nested($id: BigInt!) {
  applicationByRowId(rowId: $id) {
    creditPoolsByApplicationId(orderBy: ROW_ID_ASC) {
      nodes { key purchased allocated used remaining expired unallocated status }
    }
    endUsersByApplicationId(first: 50, orderBy: ROW_ID_ASC) {
      totalCount
      nodes {
        externalId name
        endUserBalancesByEndUserId(orderBy: POOL_ID_ASC) {
          nodes {
            creditPoolByPoolId { key }
            allocated used remaining expired status effectiveThreshold
          }
        }
      }
    }
    requestLogsByApplicationId(first: 50, orderBy: [TIME_DESC, ROW_ID_DESC]) {
      nodes { time endpoint status outcome latencyMs }
    }
  }
}"""

Page = dict[str, Any]


# ------------------------------------------------------------------ the same numbers


POOL_COUNTERS = ("purchased", "allocated", "used", "remaining", "expired", "unallocated")
BALANCE_COUNTERS = ("allocated", "used", "remaining", "expired")


def _int(value: Any) -> int | None:
    """PostGraphile sends BigInt as a string."""
    return None if value is None else int(value)


def _pool(node: dict[str, Any]) -> tuple[Any, ...]:
    return (node["key"], *(_int(node[c]) for c in POOL_COUNTERS), node["status"])


def _balance(pool: str, node: dict[str, Any], threshold: Any) -> tuple[Any, ...]:
    return (pool, *(_int(node[c]) for c in BALANCE_COUNTERS), node["status"], _int(threshold))


def _log_row(node: dict[str, Any]) -> tuple[Any, ...]:
    instant = datetime.fromisoformat(node["time"])
    return (instant, node["endpoint"], node["status"], node["outcome"], node["latencyMs"])


def usagegraph_page(answer: dict[str, Any]) -> Page:
    app = answer["data"]["application"]
    users = [edge["node"] for edge in app["endUsers"]["edges"]]
    return {
        "pools": sorted(_pool(p) for p in app["pools"]),
        "End Users in all": app["endUsers"]["totalCount"],
        "End Users": [
            (
                u["externalId"],
                u["name"],
                sorted(_balance(b["pool"], b, b["lowBalanceThreshold"]) for b in u["balances"]),
            )
            for u in users
        ],
        "request log": [_log_row(edge["node"]) for edge in app["requestLog"]["edges"]],
    }


def peer_page(answer: dict[str, Any]) -> Page:
    app = answer["data"]["applicationByRowId"]
    users = app["endUsersByApplicationId"]
    return {
        "pools": sorted(_pool(p) for p in app["creditPoolsByApplicationId"]["nodes"]),
        "End Users in all": users["totalCount"],
        "End Users": [
            (
                u["externalId"],
                u["name"],
                sorted(
                    _balance(b["creditPoolByPoolId"]["key"], b, b["effectiveThreshold"])
                    for b in u["endUserBalancesByEndUserId"]["nodes"]
                ),
            )
            for u in users["nodes"]
        ],
        "request log": [_log_row(n) for n in app["requestLogsByApplicationId"]["nodes"]],
    }


def differences(ours: Page, theirs: Page) -> list[str]:
    """Where two pages differ: per part, the first differing row."""
    found = []
    for part, rows in ours.items():
        other = theirs[part]
        if rows == other:
            continue
        if isinstance(rows, list) and isinstance(other, list):
            at = next(
                (i for i, (a, b) in enumerate(zip(rows, other, strict=False)) if a != b), None
            )
            if at is None:
                found.append(f"{part}: {len(rows)} rows against {len(other)}")
            else:
                found.append(f"{part}, row {at}: {rows[at]} against {other[at]}")
        else:
            found.append(f"{part}: {rows} against {other}")
    return found


# ------------------------------------------------------------------------ the peer


def peer_node() -> Path:
    """Node 22 from npm, with PostGraphile, installed from the lock file when absent."""
    node = PEER / "node_modules" / ".bin" / "node"
    if not node.exists():
        npm = ["npm", "ci", "--no-audit", "--no-fund"]
        subprocess.run(npm, cwd=PEER, check=True, stdout=subprocess.DEVNULL)
    return node


def start_postgraphile(url: str, log_dir: Path) -> Server:
    cli = PEER / "node_modules" / "postgraphile" / "dist" / "cli-run.js"
    node = peer_node()
    return start_server(
        # `env` execs node: the process started is PostGraphile's
        lambda port: ["env", f"PORT={port}", str(node), str(cli), "-C", "graphile.config.mjs"],
        {
            "DATABASE_URL": f"{url}?application_name={PEER_APPLICATION_NAME}",
            "NODE_ENV": "production",
        },
        log_dir,
        cwd=PEER,
    )


async def install_computed_columns(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute((PEER / "computed.sql").read_text())
        # autovacuum is off on the reference machines: fresh statistics for both systems
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


# --------------------------------------------------------------------------- rounds


@dataclass(slots=True)
class System:
    name: str
    server: Server
    endpoint: str
    body: Body
    peer: bool = False  # its backends carry the peer's application_name
    rounds: list[dict[str, float]] = field(default_factory=list)
    single_p50: list[float] = field(default_factory=list)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


Row = tuple[str, str, str]  # label, figure (a round's key, or single_p50), format


def ratio_table(title: str, ours: System, theirs: System, rows: tuple[Row, ...]) -> None:
    """Medians of the rounds per system, and the ratios ours / theirs, as a Markdown table."""

    def figure(system: System, name: str) -> float:
        if name == "single_p50":
            return median(system.single_p50)
        return median([r[name] for r in system.rounds])

    print(f"\n| {title} | {ours.name} | {theirs.name} | ratio |")
    print("|---|---|---|---|")
    for label, name, form in rows:
        a, b = figure(ours, name), figure(theirs, name)
        print(f"| {label} | {form.format(a)} | {form.format(b)} | {a / b:.2f} |")


SINGLE_ROW: Row = ("one client, sequential: p50", "single_p50", "{:.1f} ms")


def round_rows(counted: str, clients: int) -> tuple[Row, ...]:
    """The figures of every loaded round: `counted` (what the rate counts) per second, p50,
    p99, and the server's and PostgreSQL's CPU per request."""
    return (
        (f"{counted}/s (median of rounds)", "rate", "{:,.0f}"),
        (f"p50 at {clients} clients", "p50", "{:.1f} ms"),
        (f"p99 at {clients} clients", "p99", "{:.1f} ms"),
        ("server CPU per request", "server_ms", "{:.2f} ms"),
        ("PostgreSQL CPU per request", "pg_ms", "{:.2f} ms"),
    )


def print_table(ours: System, theirs: System, clients: int, load: str) -> None:
    """Medians of the rounds per system, and usagegraph / PostGraphile."""
    rows = (*round_rows("requests", clients), SINGLE_ROW)
    ratio_table(f"nested query, load: {load}", ours, theirs, rows)
    for system in (ours, theirs):
        rates = ", ".join(f"{r['rate']:,.0f}" for r in system.rounds)
        singles = ", ".join(f"{p:.1f}" for p in system.single_p50)
        print(f"{system.name}: rounds {rates} requests/s; one client p50 {singles} ms")


# ----------------------------------------------------------------------------- main


async def same_numbers(ours: System, theirs: System, key: str) -> httpx.Response | None:
    """usagegraph's answer once both carry the same numbers for every row of the page, else
    None (the differences printed). Both read the same snapshot of the request log when
    nothing writes it: usagegraph logs its own requests after answering, flushed within
    0.2 s, so each try waits a second and asks PostGraphile first."""
    found = ["no answer compared"]
    for _ in range(3):
        await asyncio.sleep(1)
        peer_answer = (await first_answer(theirs.endpoint, key, theirs.body)).json()
        answer = await first_answer(ours.endpoint, key, ours.body)
        if "errors" in peer_answer or "errors" in answer.json():
            print("errors:", peer_answer.get("errors"), answer.json().get("errors"))
            return None
        found = differences(usagegraph_page(answer.json()), peer_page(peer_answer))
        if not found:
            page = usagegraph_page(answer.json())
            print(
                f"same numbers in both answers: {len(page['pools'])} pools,"
                f" {len(page['End Users'])} End Users of {page['End Users in all']:,} with"
                f" {sum(len(u[2]) for u in page['End Users'])} balances,"
                f" {len(page['request log'])} request-log entries"
            )
            return answer
    print("the two answers differ:\n  " + "\n  ".join(found))
    return None


async def interleaved(
    systems: tuple[System, System],
    runner: Runner,
    key: str,
    options: argparse.Namespace,
    database: str,
    peer_name: str = PEER_APPLICATION_NAME,
    after_round: Callable[[int], None] | None = None,
) -> None:
    """A/B rounds at `--clients`, B/A every other round (`after_round(number)` called after
    each pair), then, when `--single-seconds` is positive, such rounds of one client. The
    peer's PostgreSQL backends carry the application_name `peer_name`."""
    admin = await asyncpg.connect(options.admin_dsn)
    try:
        for number in range(1, options.rounds + 1):
            # each its turn first: neither gains by its place in the rounds
            for system in systems if number % 2 else systems[::-1]:
                result = await measured_round(
                    system.server,
                    runner,
                    key,
                    system.body,
                    options.clients,
                    options.seconds,
                    admin,
                    database,
                    (peer_name, system.peer),
                )
                system.rounds.append(result)
            if after_round is not None:
                after_round(number)
        for number in range(options.rounds if options.single_seconds > 0 else 0):
            for system in systems if number % 2 == 0 else systems[::-1]:
                single = await runner(
                    system.endpoint, key, system.body, 1, 0, options.single_seconds
                )
                system.single_p50.append(single["p50"])
    finally:
        await admin.close()


async def main() -> int:
    parser = bench_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--single-seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    options = parsed(parser)
    if options.quick:
        options.single_seconds = 3
    load, runner = load_runner(options.load)
    db: BenchDatabase = await bench_database(options)
    servers: list[Server] = []
    work = Path(tempfile.mkdtemp(prefix="usagegraph_dashboard_peer_"))
    try:
        prepared = await populate(db, options)
        if prepared is None:
            return 1
        app, key = prepared
        variables = {"id": str(app)}
        statements = await captured_statements(db, app, NESTED, variables)
        await close_database()
        await install_computed_columns(db.dsn)

        servers.append(start_usagegraph(db, work))
        body = {"query": NESTED, "variables": variables}
        ours = System("usagegraph", servers[-1], servers[-1].url, body)
        servers.append(start_postgraphile(db.url, work))
        body = {"query": PEER_NESTED, "variables": variables}
        theirs = System("PostGraphile 5", servers[-1], servers[-1].url, body, peer=True)
        await first_answer(ours.endpoint, key, ours.body)
        try:
            await first_answer(theirs.endpoint, key, theirs.body, patience=120)
        except RuntimeError:
            print(theirs.server.tail(60))
            raise
        for system in (ours, theirs):  # warm, and a full page of request log to compare
            await runner(system.endpoint, key, system.body, options.clients, 0, options.warmup)
        answer = await same_numbers(ours, theirs, key)
        if answer is None:
            return 1
        print(f"usagegraph's answer: {len(answer.content):,} bytes, {len(statements)} statements")

        await interleaved((ours, theirs), runner, key, options, db.name)
        replay = Replay(db, options.admin_dsn, options.clients)
        raw = await replayed(replay, statements, options.seconds)
        bare = await bare_http(
            runner, answer.content, key, ours.body, options.clients, options.seconds
        )
        print_table(ours, theirs, options.clients, load)
        print(
            f"floors of usagegraph's answer: its {len(statements)} statements replayed by raw"
            f" asyncpg {raw['rate']:,.0f}/s, p50 {raw['p50']:.1f} ms, {raw['cpu_ms']:.2f} ms"
            f" CPU each; the same bytes from a bare Starlette endpoint {bare['rate']:,.0f}/s,"
            f" p50 {bare['p50']:.1f} ms, {bare['cpu_ms']:.2f} ms CPU each"
        )
        print(f"({machine_line()})")
        failed = sum(r["errors"] for s in (ours, theirs) for r in s.rounds)
        if failed:
            print(f"{failed} failed requests")
            return 1
        return 0
    finally:
        for server in servers:
            server.stop()
        await release_database(db, options)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
