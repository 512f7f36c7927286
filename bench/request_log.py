"""The request log's three costs, on PostgreSQL, in one run:

1. Middleware: `consumeCredits` over HTTP (`bench.graphql_consume`'s wrk phase, or its
   httpx clients without wrk) against one server process with the request log off
   (USAGEGRAPH_REQUEST_LOG=0), on, and on with the per-key rate limit, in alternating
   rounds (`--rounds`, each a fresh server), so that drift of the shared machine hits every
   configuration alike. The cost is 1 - rate(on) / rate(off) over the rounds' means; the
   target is under 10%. After each "on" round the log rows are counted against the answers.
2. Ingest: `--ingest` records (default 100,000) POSTed to /v1/request-logs in batches of
   1,000 by `--ingest-clients` concurrent clients; records/s (target 20,000), every record
   checked stored; beside a raw asyncpg COPY of the same rows (the floor).
3. Reading: `--rows` rows (default 5,000,000) generated with one set-based INSERT into the
   scratch database (one application holding most of them, 60 days, a realistic mix of
   outcomes, endpoints, keys and End Users), ANALYZEd; then `requestLog(first: 50, filter)`
   pages over HTTP for several filters, `--reads` sequential calls each (p50 target 20 ms),
   beside the same SELECT run directly on asyncpg.

Everything runs in a throwaway database (dropped at the end unless --keep). `--quick` is a
small scale for checking that the script runs.

    .venv/bin/python -m bench.request_log [--quick] [--only middleware|ingest|read]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from api.settings import Settings
from bench.graphql_consume import (
    Clients,
    Target,
    prewarm,
    run_phase,
    seed,
    single_consumer,
    start_usagegraph,
    wrk_phase,
)
from bench.harness import (
    DEFAULT_ADMIN_DSN,
    create_database,
    database_urls,
    drop_database,
    find_wrk,
    open_database,
    wait_for_connections,
)
from models.request_log import COLUMNS

CONFIGS = {
    "log off": {"USAGEGRAPH_REQUEST_LOG": "0", "USAGEGRAPH_RATE_LIMIT_PER_SECOND": "0"},
    "log on": {"USAGEGRAPH_REQUEST_LOG": "1", "USAGEGRAPH_RATE_LIMIT_PER_SECOND": "0"},
    "log on + rate limit": {"USAGEGRAPH_REQUEST_LOG": "1"},
}
PAGE = """query Page($app: ID!, $filter: RequestLogFilter) {
  application(id: $app) {
    requestLog(first: 50, filter: $filter) {
      pageInfo { hasNextPage endCursor }
      edges { node { id time endpoint status outcome errorCode latencyMs requestId } }
    }
  }
}"""


async def log_rows(dsn: str, source: str | None = None) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        if source is not None:
            return await conn.fetchval("SELECT count(*) FROM request_log WHERE source = $1", source)
        return await conn.fetchval("SELECT count(*) FROM request_log")
    finally:
        await conn.close()


# ------------------------------------------------------------------------ 1. middleware


async def middleware_rounds(
    args: argparse.Namespace, url: str, dsn: str, work_dir: Path
) -> dict[str, list[float]]:
    accounts, application_id, api_key, refs = await seed(args.end_users)
    wrk = None if args.load == "httpx" else find_wrk()
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for round_number in range(args.rounds):
        for name, env in CONFIGS.items():
            os.environ.update(env)
            await wait_for_connections(args.admin_dsn, args.pool_size + 1)
            rows_before = await log_rows(dsn)
            server = await start_usagegraph(url, args.pool_size, False, None, work_dir, api_key)
            try:
                target = Target(server.url, api_key, application_id, refs)
                async with Clients(target, args.clients, False) as clients:
                    await prewarm(clients, accounts, args.clients)
                    if wrk is None:
                        phase = await run_phase(
                            "consumeCredits",
                            single_consumer(clients),
                            accounts,
                            args.clients,
                            1,
                            args,
                            server.pid,
                        )
                if wrk is not None:
                    phase = await wrk_phase(target, accounts, args, server.pid, work_dir)
            finally:
                server.stop()  # SIGTERM: a clean shutdown, which flushes the log
            logged = await log_rows(dsn) - rows_before
            answered = phase.total + len(accounts) + 1  # prewarm and the readiness check
            rate = phase.consumptions_per_second
            cpu = phase.cpu.server if phase.cpu and phase.cpu.server is not None else float("nan")
            rates[name].append(rate)
            check = ""
            if env["USAGEGRAPH_REQUEST_LOG"] == "1":
                check = f", {logged:,} log rows for >= {answered:,} requests"
                if logged < answered:
                    check += " MISSING RECORDS"
            print(
                f"  round {round_number + 1} {name}: {rate:,.0f} consumptions/s,"
                f" p50 {phase.percentile(0.5):.1f} ms, p99 {phase.percentile(0.99):.1f} ms,"
                f" server CPU {cpu:.1f} s,"
                f" errors {phase.errors}{check}",
                flush=True,
            )
    return rates


# ------------------------------------------------------------------------ 2. ingest


def ingest_records(count: int, application_id: int) -> list[dict[str, Any]]:
    # recent: older records would meet the retention job, which deletes what it is past
    start = datetime.now(UTC) - timedelta(hours=1)
    return [
        {
            "applicationId": application_id,
            "time": (start + timedelta(milliseconds=n)).isoformat(),
            "method": "POST",
            "endpoint": ("POST /editor/launch", "POST /email/create")[n % 2],
            "status": 200 if n % 10 else 502,
            "latencyMs": 20 + n % 50,
            "requestId": f"ingest-{n}",
            "endUserExternalId": f"user-{n % 1000}",
        }
        for n in range(count)
    ]


async def ingest_phase(
    args: argparse.Namespace, url: str, dsn: str, work_dir: Path
) -> dict[str, float]:
    accounts, application_id, api_key, _ = await seed(10)
    del accounts
    records = ingest_records(args.ingest, application_id)
    batches = [records[i : i + 1_000] for i in range(0, len(records), 1_000)]
    os.environ.update(CONFIGS["log on"])
    await wait_for_connections(args.admin_dsn, args.pool_size + 1)
    rows_before = await log_rows(dsn, "ingest")
    server = await start_usagegraph(url, args.pool_size, False, None, work_dir, api_key)
    endpoint = f"{server.base}/v1/request-logs"
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        queue = list(reversed(batches))
        accepted = 0

        async def client_loop() -> None:
            nonlocal accepted
            async with httpx.AsyncClient(timeout=120) as client:
                while queue:
                    batch = queue.pop()
                    answer = await client.post(endpoint, json={"records": batch}, headers=headers)
                    body = answer.json()
                    if answer.status_code != 200 or body["errors"]:
                        raise RuntimeError(f"ingest answered {answer.status_code}: {body}"[:300])
                    accepted += body["accepted"]

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(args.ingest_clients)))
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    stored = await log_rows(dsn, "ingest") - rows_before
    expected = accepted
    print(
        f"  ingest: {accepted:,} records in {elapsed:.2f} s = {accepted / elapsed:,.0f} records/s;"
        f" {stored:,} rows stored ({'ok' if stored == expected else f'EXPECTED {expected:,}'})",
        flush=True,
    )
    # The floor: COPY of the same rows (already validated) on one connection.
    conn = await asyncpg.connect(dsn)
    try:
        rows = [
            (
                application_id,
                None,
                datetime.fromisoformat(r["time"]),
                "POST",
                r["endpoint"],
                None,
                None,
                r["endUserExternalId"],
                None,
                r["status"],
                "OK" if r["status"] == 200 else "SERVER_ERROR",
                None,
                None,
                float(r["latencyMs"]),
                r["requestId"],
                "ingest",
            )
            for r in records
        ]
        started = time.perf_counter()
        await conn.copy_records_to_table("request_log", records=rows, columns=list(COLUMNS))
        copy_elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    print(f"  raw COPY of the same rows: {len(rows) / copy_elapsed:,.0f} records/s", flush=True)
    return {"http": accepted / elapsed, "copy": len(rows) / copy_elapsed}


# ------------------------------------------------------------------------ 3. reading


GENERATE = """
INSERT INTO request_log (application_id, organization_id, "time", method, endpoint,
  operation_name, end_user_id, end_user_external_id, api_key_prefix, status, outcome,
  error_code, error_message, latency_ms, request_id, source)
SELECT CASE WHEN g % 20 = 0 THEN $2::bigint ELSE $1::bigint END, $3::bigint,
  $4::timestamptz - interval '1 second' * (g::float8 * $5::bigint / $6::bigint),
  'POST',
  (ARRAY['POST /graphql consumeCredits', 'POST /graphql application',
         'POST /graphql allocateCredits', 'GET /v1/applications/{id}/export',
         'POST /editor/launch'])[1 + g % 5],
  NULL,
  CASE WHEN g % 3 = 0 THEN ($7::bigint[])[1 + g % cardinality($7::bigint[])] END,
  CASE WHEN g % 3 = 0 THEN 'user-' || (1 + g % cardinality($7::bigint[])) END,
  'key' || (g % 7),
  CASE WHEN g % 100 = 1 THEN 401 WHEN g % 50 = 2 THEN 404 WHEN g % 997 = 3 THEN 500
       ELSE 200 END,
  CASE WHEN g % 100 = 1 THEN 'AUTH_ERROR' WHEN g % 50 = 2 THEN 'CLIENT_ERROR'
       WHEN g % 997 = 3 THEN 'SERVER_ERROR' ELSE 'OK' END,
  CASE WHEN g % 100 = 1 THEN 'UNAUTHENTICATED' WHEN g % 50 = 2 THEN 'NOT_FOUND'
       WHEN g % 997 = 3 THEN 'INTERNAL' END,
  NULL, 5 + (g % 200) / 10.0, md5(g::text), 'api'
FROM generate_series(1, $6::bigint) AS g
"""


async def read_phase(args: argparse.Namespace, url: str, dsn: str, work_dir: Path) -> None:
    _, application_id, api_key, refs = await seed(10)
    end_users = sorted(refs)
    other = application_id + 1_000_000  # rows of "another application" around ours
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        now = datetime.now(UTC)
        await conn.execute(
            GENERATE, application_id, other, 1, now, 60 * 86_400, args.rows, end_users
        )
        await conn.execute("ANALYZE request_log")
        print(
            f"  generated {args.rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True
        )
    finally:
        await conn.close()
    filters = {
        "no filter": None,
        "outcome SERVER_ERROR": {"outcome": "SERVER_ERROR"},
        "statusClass 4": {"statusClass": 4},
        "statusClass 5 (rare)": {"statusClass": 5},
        "endpoint + last 7 days": {
            "endpoint": "POST /graphql allocateCredits",
            "from": (now - timedelta(days=7)).isoformat(),
        },
        "End User": {"endUser": {"id": str(end_users[0])}},
        "apiKeyPrefix + outcome": {"apiKeyPrefix": "key3", "outcome": "AUTH_ERROR"},
    }
    os.environ.update(CONFIGS["log on"])
    await wait_for_connections(args.admin_dsn, args.pool_size + 1)
    server = await start_usagegraph(url, args.pool_size, False, None, work_dir, api_key)
    try:
        async with httpx.AsyncClient(
            timeout=60, headers={"Authorization": f"Bearer {api_key}"}
        ) as client:
            for name, given in filters.items():
                timings = []
                rows = 0
                for n in range(args.reads + 5):
                    started = time.perf_counter()
                    answer = await client.post(
                        server.url,
                        json={"query": PAGE, "variables": {"app": application_id, "filter": given}},
                    )
                    elapsed = time.perf_counter() - started
                    body = answer.json()
                    if body.get("errors"):
                        raise RuntimeError(str(body["errors"])[:300])
                    rows = len(body["data"]["application"]["requestLog"]["edges"])
                    if n >= 5:  # the first calls warm the caches
                        timings.append(elapsed * 1000)
                timings.sort()
                print(
                    f"  requestLog(first: 50) {name}: p50 {statistics.median(timings):.1f} ms,"
                    f" p90 {timings[int(len(timings) * 0.9)]:.1f} ms ({rows} rows a page)",
                    flush=True,
                )
    finally:
        server.stop()


# ------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN)
    parser.add_argument("--quick", action="store_true", help="small scale: check the script runs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--end-users", type=int, default=1_000)
    parser.add_argument("--pool-size", type=int, default=40)
    parser.add_argument("--load", choices=["wrk", "httpx"], default="wrk")
    parser.add_argument("--ingest", type=int, default=100_000)
    parser.add_argument("--ingest-clients", type=int, default=4)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--only", choices=["middleware", "ingest", "read"], action="append")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.wrk_threads, args.wrk_check_every = 1, 1
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.end_users = 1, 3.0, 1.0, 100
        args.ingest, args.rows, args.reads = 10_000, 200_000, 20
    return args


async def main(args: argparse.Namespace) -> int:
    work_dir = args.work_dir = Path(tempfile.mkdtemp(prefix="usagegraph_request_log_bench_"))
    name = await create_database(args.admin_dsn)
    url, dsn = database_urls(args.admin_dsn, name)
    print(f"scratch database {name}; work files in {work_dir}; load average {os.getloadavg()}")
    only = set(args.only or ["middleware", "ingest", "read"])
    try:
        await open_database(
            Settings(DATABASE_URL=url, USAGEGRAPH_DB_POOL_MIN=1, USAGEGRAPH_DB_POOL_MAX=4)
        )
        if "middleware" in only:
            print("1. middleware cost on consumeCredits", flush=True)
            rates = await middleware_rounds(args, url, dsn, work_dir)
            off = statistics.mean(rates["log off"])
            for label in ("log on", "log on + rate limit"):
                on = statistics.mean(rates[label])
                cost = 1 - on / off
                verdict = "target met" if cost < 0.10 else "TARGET MISSED"
                print(
                    f"  {label}: {on:,.0f} vs {off:,.0f} consumptions/s with the log off:"
                    f" cost {cost:.1%} (target < 10%: {verdict})",
                    flush=True,
                )
        if "ingest" in only:
            print("2. ingest through POST /v1/request-logs", flush=True)
            figures = await ingest_phase(args, url, dsn, work_dir)
            verdict = "target met" if figures["http"] >= 20_000 else "TARGET MISSED"
            print(f"  target 20,000 records/s: {verdict}", flush=True)
        if "read" in only:
            print(f"3. requestLog pages on {args.rows:,} rows (target p50 < 20 ms)", flush=True)
            await read_phase(args, url, dsn, work_dir)
    finally:
        from api.database import close_database

        await close_database()
        if not args.keep:
            await drop_database(args.admin_dsn, name)
    print(f"load average at the end {os.getloadavg()} (other work shares the machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
