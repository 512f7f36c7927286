"""`consumeCredits` against its peer: one `usagegraph serve` process and one plain
Strawberry + Tortoise app (`bench/peers/plain_consume.py`) over the same PostgreSQL
database, the same End Users, the same load.

Setup as `bench.graphql_consume`'s: a scratch database, migrated, one application with an
ADMIN key and `--end-users` End Users (default 1,000), each allocated an equal share of one
lot of 10^9 credits through usagegraph's model functions; then ANALYZE (autovacuum is off on
the reference machines). Both servers run from the start, each with a pool of `--pool-size`
connections (default 20, usagegraph's default): usagegraph as shipped (`usagegraph serve
--no-access-log`: its request log, consumption combiner, outbox relay and background jobs
on; its per-key rate limit at 10^6/s, so that the benchmark's one key is not refused), the
peer under uvicorn with the same options (one process, uvicorn's default loop and
HTTP implementation, access log off). Its PostgreSQL backends carry the application_name
`plain_consume_peer`, which tells the two systems' database CPU apart.

Before any timing, one consumption of one End User is sent to usagegraph and then to the
peer: both must answer without errors, the peer's remaining one credit lower and its
version one higher than usagegraph's answer (exit 1 otherwise). Each system is warmed with
`--warmup` s of load, then, interleaved A/B/A/B/A/B, `--rounds` rounds of `--seconds` each:
`--clients` connections (default 64) of wrk (`bench/wrk_post.lua`; httpx clients when wrk is
not installed, or with `--load httpx`) POST the mutation of `bench.graphql_consume` (the same
text, values in variables, 1 credit of a random End User per request; every answer checked
for errors) to each system. Per round and as medians: consumptions/s, p50, p99, the server
process's CPU per request (/proc) and PostgreSQL's (the CPU of the backends serving that
system, /proc of each backend), with the ratios usagegraph / peer. At the end both servers
stop and, with `--peer complete`, `usagegraph verify` recomputes every counter from the
ledger both wrote (exit 1 unless it agrees).

    .venv/bin/python -m bench.consume_peer [--quick] [--rounds 5] [--seconds 10]
        [--warmup 3] [--clients 64] [--end-users 1000] [--pool-size 20] [--load wrk|httpx]
        [--single-seconds 0] [--peer-validation-cache] [--peer minimal|complete]

`--quick` (200 End Users, two rounds of 3 s) checks that everything runs.
`--single-seconds S` adds as many interleaved rounds of one sequential client, S each (p50).
`--peer` chooses the peer's write: `minimal` (default), the balance UPDATE guarded by
remaining, the balance read back and one ledger row in one transaction (the least a plain
app does, so the most favourable comparison for the peer; `usagegraph verify` is then not
run), or `complete`, every row and counter usagegraph writes, so that `verify` passes.
`--peer-validation-cache` runs the peer with Strawberry's ValidationCache as well as its
ParserCache (usagegraph caches both), to show what validating each request costs it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from api.database import close_database
from api.settings import Settings
from bench.dashboard import verified
from bench.dashboard_peer import SINGLE_ROW, System, interleaved, ratio_table, round_rows
from bench.graphql_consume import Target, seed, start_usagegraph, wrk_bodies
from bench.harness import (
    DEFAULT_ADMIN_DSN,
    Server,
    create_database,
    database_urls,
    drop_database,
    first_answer,
    load_runner,
    machine_line,
    open_database,
    start_server,
    wait_for_connections,
)

PEER_APPLICATION_NAME = "plain_consume_peer"  # how its PostgreSQL backends are told apart
# usagegraph's per-key rate limit (2,000/s by default) stays on, its cost counted, at a rate
# one process never reaches: the one key of the benchmark would otherwise cap the rounds.
UNREACHED_RATE = "1000000"


def start_peer(
    url: str, pool_size: int, validation_cache: bool, shape: str, log_dir: Path
) -> Server:
    """The plain Strawberry + Tortoise app on the database, a pool of `pool_size`."""
    pool = f"minsize={pool_size}&maxsize={pool_size}&application_name={PEER_APPLICATION_NAME}"
    return start_server(
        lambda port: [sys.executable, "-m", "bench.peers.plain_consume", "--port", str(port)],
        {
            "DATABASE_URL": f"{url}{'&' if '?' in url else '?'}{pool}",
            "PLAIN_CONSUME_VALIDATION_CACHE": "1" if validation_cache else "0",
            "PLAIN_CONSUME_SHAPE": shape,
        },
        log_dir,
        peer=True,
    )


def balance_in(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The balance of a successful consumption's answer, else None."""
    payload = (answer.get("data") or {}).get("consumeCredits") or {}
    if answer.get("errors") or payload.get("errors") or not payload.get("balance"):
        return None
    return payload["balance"]


async def same_consumption(ours: System, theirs: System, key: str) -> bool:
    """One consumption of one End User through usagegraph, then through the peer: both
    succeed, and the peer's answer is one credit and one version further on."""
    body = ours.body[0]
    answers = [(await first_answer(s.endpoint, key, body)).json() for s in (ours, theirs)]
    mine, other = (balance_in(answer) for answer in answers)
    end_user = body["variables"]["input"]["endUser"]
    if mine is None or other is None:
        print(f"a consumption of {end_user} failed: usagegraph {answers[0]}, peer {answers[1]}")
        return False
    expected = {**mine, "remaining": mine["remaining"] - 1, "version": mine["version"] + 1}
    if other != expected:
        print(f"answers differ for {end_user}: usagegraph {mine}, then peer {other}")
        return False
    print(f"one consumption each of {end_user}: usagegraph {mine}, then the peer {other}")
    return True


def print_round(number: int, ours: System, theirs: System) -> None:
    a, b = ours.rounds[-1], theirs.rounds[-1]
    print(
        f"round {number}: "
        + "; ".join(
            f"{s.name} {r['rate']:,.0f}/s p50 {r['p50']:.1f} ms p99 {r['p99']:.1f} ms,"
            f" server {r['server_ms']:.2f} ms, PostgreSQL {r['pg_ms']:.2f} ms a request"
            for s, r in ((ours, a), (theirs, b))
        )
        + f"; ratio {a['rate'] / b['rate']:.2f} ({machine_line()})",
        flush=True,
    )


def print_table(ours: System, theirs: System, clients: int, load: str) -> None:
    rows = round_rows("consumptions", clients) + ((SINGLE_ROW,) if ours.single_p50 else ())
    ratio_table(f"consumeCredits, load: {load}", ours, theirs, rows)
    pairs = zip(ours.rounds, theirs.rounds, strict=True)
    each = ", ".join(f"{a['rate']:,.0f}/{b['rate']:,.0f}" for a, b in pairs)
    print(f"rounds, usagegraph/peer consumptions/s: {each}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN)
    parser.add_argument("--end-users", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--pool-size", type=int, default=20, help="each server's pool")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument(
        "--single-seconds",
        type=float,
        default=0,
        help="then as many rounds of one sequential client, of this length (0: none)",
    )
    parser.add_argument("--load", choices=("wrk", "httpx"), default=None)
    parser.add_argument(
        "--peer-validation-cache",
        action="store_true",
        help="the peer caches validated documents too (Strawberry's ValidationCache)",
    )
    parser.add_argument(
        "--peer",
        choices=("minimal", "complete"),
        default="minimal",
        help="the peer's write: the balance UPDATE and one ledger row (minimal), or every"
        " row and counter usagegraph writes (complete, checked by usagegraph verify)",
    )
    parser.add_argument("--quick", action="store_true", help="200 End Users, 2 rounds of 3 s")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    options = parser.parse_args()
    if options.quick:
        options.end_users, options.rounds, options.seconds, options.warmup = 200, 2, 3, 1
    if min(options.end_users, options.clients, options.pool_size, options.rounds) < 1:
        parser.error("end-users, clients, pool-size and rounds must be positive")
    return options


async def main(options: argparse.Namespace) -> int:
    load, runner = load_runner(options.load)
    if load == "httpx":
        print(
            "load by httpx clients in this process: on a small machine they, not the servers,"
            " set the rate (install wrk for figures to compare)"
        )
    options.database = await create_database(options.admin_dsn, "usagegraph_consume_peer")
    url, dsn = database_urls(options.admin_dsn, options.database)
    print(f"scratch database {options.database}; load generator {load}")
    work = Path(tempfile.mkdtemp(prefix="usagegraph_consume_peer_"))
    servers: list[Server] = []
    try:
        await open_database(
            Settings(DATABASE_URL=url, USAGEGRAPH_DB_POOL_MIN=1, USAGEGRAPH_DB_POOL_MAX=4)
        )
        accounts, application_id, key, refs = await seed(options.end_users)
        await close_database()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
        print(f"funded {len(accounts):,} End Users")

        await wait_for_connections(options.admin_dsn, 2 * options.pool_size + 10)
        limit = {"USAGEGRAPH_RATE_LIMIT_PER_SECOND": UNREACHED_RATE}
        servers.append(
            await start_usagegraph(url, options.pool_size, False, None, work, key, limit)
        )
        bodies = wrk_bodies(Target(servers[-1].url, key, application_id, refs), accounts)
        ours = System("usagegraph", servers[-1], servers[-1].url, bodies)
        servers.append(
            start_peer(url, options.pool_size, options.peer_validation_cache, options.peer, work)
        )
        await servers[-1].ready(key)
        peer = servers[-1]
        name = f"plain Strawberry + Tortoise, {options.peer}" + (
            " (validation cached)" if options.peer_validation_cache else ""
        )
        theirs = System(name, peer, peer.url, bodies, peer=True)
        if not await same_consumption(ours, theirs, key):
            return 1

        for system in (ours, theirs):  # both warm before the first round
            await runner(system.endpoint, key, system.body, options.clients, 0, options.warmup)
        await interleaved(
            (ours, theirs),
            runner,
            key,
            options,
            options.database,
            PEER_APPLICATION_NAME,
            lambda number: print_round(number, ours, theirs),
        )
        print_table(ours, theirs, options.clients, load)
        print(f"({machine_line()})")
        for server in servers:
            server.stop()
        if options.peer == "complete":
            consistent = await verified(url)
        else:  # the minimal peer leaves the counters behind its ledger rows by design
            consistent = True
            print("usagegraph verify not run: the minimal peer writes no lot or pool counters")
        failed = sum(r["errors"] for s in (ours, theirs) for r in s.rounds)
        if failed:
            print(f"{failed} failed requests")
        return 0 if consistent and not failed else 1
    finally:
        for server in servers:
            server.stop()
        await close_database()
        if options.keep:
            print(f"kept database {options.database}")
        else:
            await drop_database(options.admin_dsn, options.database)
            print(f"dropped database {options.database}")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
