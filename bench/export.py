"""Export throughput and server memory: `GET /v1/applications/{id}/export?type=consumption
&format=csv` of every usage event, through HTTP from one `usagegraph serve` process on
PostgreSQL, beside a raw `COPY (same SELECT) TO STDOUT (FORMAT csv)` of the same rows by
asyncpg in the same run.

What it does
    Creates a throwaway database, migrates it, makes one organization, application, pool,
    lot and API key through the domain functions, then writes `--end-users` End Users and
    `--rows` consumptions of 1 credit spread over 90 days with set-based SQL straight into
    the tables: usage events, their CONSUME ledger entries, one ALLOCATE entry and one
    allocation per End User, and every counter (End User balances, allocations, lot, pool)
    set to what the ledger says, so that `verify_ledger()` passes (checked unless
    `--no-verify`). Then it starts one server process (`usagegraph serve`, background jobs
    off), warms it up with a one-day export, and downloads the whole range with curl (a C
    client, so the client's CPU stays small on a 2-core machine), counting lines, while it
    samples the server's resident memory (VmRSS in /proc/<pid>/status) every 10 ms.

Figures
    rows/s       rows / wall time of the download (first byte requested to last byte read).
    RSS growth   peak sampled VmRSS during the download minus VmRSS just before it; VmHWM
                 (the kernel's own high-water mark) is printed too.
    raw COPY     the same SELECT (`models.exports.postgres_statement`) as COPY ... TO
                 STDOUT (FORMAT csv, HEADER) through asyncpg into a byte counter.

Targets: at least 100,000 rows/s and RSS growth under 50 MB for 1,000,000 rows.

    .venv/bin/python -m bench.export            # 1,000,000 rows, 10,000 End Users
    .venv/bin/python -m bench.export --quick    # 50,000 rows, 1,000 End Users
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from api.database import close_database
from api.settings import Settings
from bench.harness import (
    DEFAULT_ADMIN_DSN,
    Server,
    create_database,
    database_urls,
    drop_database,
    open_database,
    rss_kb,
    start_server,
    usagegraph_serve,
)
from models.accounts import create_api_key, create_application, create_organization
from models.exports import QUERIES, ExportType, postgres_statement
from models.ledger import purchase_credits
from models.tenancy import ApiKeyRole
from models.verify import verify_ledger

DAYS = 90


async def load(dsn: str, application_id: int, rows: int, users: int) -> None:
    """End Users, allocations, usage events, ledger entries and counters, set-based."""
    per_user = -(-rows // users) + 10
    conn = await asyncpg.connect(dsn)
    try:
        pool_id, lot_id = await conn.fetchrow(
            "SELECT p.id, k.id FROM credit_pool p JOIN credit_pack k ON k.pool_id = p.id"
            " WHERE p.application_id = $1 AND p.key = 'ai'",
            application_id,
        )
        end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO end_user (application_id, external_id, name, created_at)"
                " SELECT $1, 'user-' || i, 'User ' || i, $2::timestamptz - interval '91 days'"
                " FROM generate_series(1, $3) AS i",
                application_id,
                end,
                users,
            )
            await conn.execute(
                "INSERT INTO ledger_entry (application_id, pool_id, lot_id, end_user_id, kind,"
                " amount, occurred_at, created_at) SELECT $1, $2, $3, id, 'ALLOCATE', $4,"
                " created_at, created_at FROM end_user WHERE application_id = $1",
                application_id,
                pool_id,
                lot_id,
                per_user,
            )
            # Consumptions spread evenly over the 90 days before `end`, End Users in turn.
            await conn.execute(
                "INSERT INTO usage_event (application_id, pool_id, end_user_id, credits,"
                " feature, occurred_at, created_at)"
                " SELECT $1, $2, u.ids[1 + i % $5::int], 1,"
                " CASE WHEN i % 3 = 0 THEN 'ai_rewrite' ELSE 'ai_generation' END,"
                f" $3::timestamptz - i * (interval '{DAYS} days' / $4::int),"
                f" $3::timestamptz - i * (interval '{DAYS} days' / $4::int)"
                " FROM generate_series(0, $4::int - 1) AS i,"
                " (SELECT array_agg(id ORDER BY id) AS ids FROM end_user"
                "  WHERE application_id = $1) AS u",
                application_id,
                pool_id,
                end,
                rows,
                users,
            )
            await conn.execute(
                "INSERT INTO ledger_entry (application_id, pool_id, lot_id, end_user_id, kind,"
                " amount, feature, usage_event_id, occurred_at, created_at)"
                " SELECT application_id, pool_id, $2, end_user_id, 'CONSUME', -credits,"
                " feature, id, occurred_at, created_at FROM usage_event"
                " WHERE application_id = $1",
                application_id,
                lot_id,
            )
            used = (
                "(SELECT end_user_id, count(*) AS used FROM usage_event"
                " WHERE application_id = $1 GROUP BY end_user_id)"
            )
            await conn.execute(
                "INSERT INTO end_user_balance (end_user_id, pool_id, allocated, used, expired,"
                " remaining, status, version, updated_at)"
                " SELECT e.id, $2, $3, COALESCE(s.used, 0), 0, $3 - COALESCE(s.used, 0),"
                " CASE WHEN $3 - COALESCE(s.used, 0) = 0 THEN 'EXHAUSTED' ELSE 'OK' END, 2, now()"
                f" FROM end_user e LEFT JOIN {used} s ON s.end_user_id = e.id"
                " WHERE e.application_id = $1",
                application_id,
                pool_id,
                per_user,
            )
            await conn.execute(
                "INSERT INTO allocation (end_user_id, pool_id, lot_id, allocated, used, expired,"
                " remaining) SELECT end_user_id, pool_id, $2, allocated, used, 0, remaining"
                " FROM end_user_balance WHERE pool_id = $1",
                pool_id,
                lot_id,
            )
            await conn.execute(
                "UPDATE credit_pack SET unallocated = unallocated - $2, used = used + $3"
                " WHERE id = $1",
                lot_id,
                per_user * users,
                rows,
            )
            await conn.execute(
                "UPDATE credit_pool SET allocated = allocated + $2, used = used + $3,"
                " end_user_remaining = end_user_remaining + $2 - $3 WHERE id = $1",
                pool_id,
                per_user * users,
                rows,
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def download(url: str, key: str) -> tuple[int, int, float]:
    """(HTTP status, lines, seconds) of a curl download piped into wc -l."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-o",
        "pipefail",
        "-c",
        f"curl -sS --fail -H 'Authorization: Bearer {key}' '{url}' | wc -l",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    elapsed = time.perf_counter() - started
    return proc.returncode or 0, int(out.strip() or 0), elapsed


async def measured_download(url: str, key: str, pid: int) -> dict[str, float]:
    rss_before, hwm_before = rss_kb(pid)
    peak = rss_before
    task = asyncio.create_task(download(url, key))
    while not task.done():
        peak = max(peak, rss_kb(pid)[0])
        await asyncio.sleep(0.01)
    status, lines, seconds = task.result()
    if status != 0:
        raise SystemExit(f"the export failed (curl/wc exit {status})")
    _, hwm_after = rss_kb(pid)
    return {
        "rows": lines - 1,  # the header
        "seconds": seconds,
        "rss_before_mb": rss_before / 1024,
        "growth_mb": (peak - rss_before) / 1024,
        "hwm_growth_mb": (hwm_after - max(hwm_before, rss_before)) / 1024,
    }


async def raw_copy(dsn: str, application_id: int, start: datetime, end: datetime) -> dict:
    conn = await asyncpg.connect(dsn)
    counted = {"bytes": 0, "lines": 0}

    async def sink(chunk: bytes) -> None:
        counted["bytes"] += len(chunk)
        counted["lines"] += chunk.count(b"\n")

    statement = postgres_statement(QUERIES[ExportType.CONSUMPTION])
    # COPY takes no parameters: the same SELECT with its three values written in.
    literal = (
        statement.replace("$1", str(application_id))
        .replace("$2", f"'{start.isoformat()}'::timestamptz")
        .replace("$3", f"'{end.isoformat()}'::timestamptz")
    )
    try:
        started = time.perf_counter()
        await conn.copy_from_query(literal, output=sink, format="csv", header=True)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return {"rows": counted["lines"] - 1, "seconds": seconds, "mb": counted["bytes"] / 1e6}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--end-users", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="50,000 rows, 1,000 End Users")
    parser.add_argument("--no-verify", action="store_true", help="skip verify_ledger()")
    parser.add_argument("--runs", type=int, default=2, help="measured downloads")
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN)
    args = parser.parse_args()
    rows, users = (50_000, 1_000) if args.quick else (args.rows, args.end_users)

    name = await create_database(args.admin_dsn, "usagegraph_bench_export")
    url, dsn = database_urls(args.admin_dsn, name)
    work = Path(tempfile.mkdtemp(prefix="usagegraph_export_"))
    server: Server | None = None
    try:
        await open_database(Settings(DATABASE_URL=url))
        organization, _ = await create_organization("export bench")
        application = await create_application(organization.id, "bench")
        await purchase_credits(application.id, "ai", (-(-rows // users) + 10) * users)
        key = (
            await create_api_key(organization.id, "bench", ApiKeyRole.READ, application.id)
        ).secret
        started = time.perf_counter()
        await load(dsn, application.id, rows, users)
        print(
            f"loaded {rows:,} consumptions of {users:,} End Users"
            f" in {time.perf_counter() - started:.1f} s"
        )
        if not args.no_verify:
            problems = await verify_ledger()
            print("verify_ledger:", "OK" if not problems else problems[:5])
            if problems:
                raise SystemExit(1)
        await close_database()

        server = start_server(usagegraph_serve, {"DATABASE_URL": url, "USAGEGRAPH_JOBS": "0"}, work)
        await server.ready(key)
        now = datetime.now(UTC)
        start, end = now - timedelta(days=DAYS + 1), now
        export = f"{server.base}/v1/applications/{application.id}/export"
        everything = (
            f"{export}?type=consumption&format=csv"
            f"&from={start.strftime('%Y-%m-%dT%H:%M:%SZ')}&to={end.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )
        one_day = (
            f"{export}?type=consumption&format=csv&from={(now - timedelta(days=1)).date()}"
            f"&to={now.date() + timedelta(days=1)}"
        )
        status, _, _ = await download(one_day, key)  # warms the export path
        if status != 0:
            raise SystemExit(f"the one-day export failed (curl/wc exit {status})")
        results = []
        copies = []
        for _ in range(args.runs):
            copies.append(
                await raw_copy(
                    dsn, application.id, start.replace(microsecond=0), end.replace(microsecond=0)
                )
            )
            result = await measured_download(everything, key, server.pid)
            if result["rows"] != rows:
                raise SystemExit(f"exported {result['rows']:,} rows, expected {rows:,}")
            results.append(result)
        print()
        print(
            "| run | export rows/s | RSS growth | VmHWM growth | raw COPY rows/s | export / COPY |"
        )
        print("|---|---|---|---|---|---|")
        for i, (r, c) in enumerate(zip(results, copies, strict=True), 1):
            rate, copy_rate = r["rows"] / r["seconds"], c["rows"] / c["seconds"]
            print(
                f"| {i} | {rate:,.0f} ({r['seconds']:.2f} s) | {r['growth_mb']:.1f} MB"
                f" (from {r['rss_before_mb']:.0f} MB) | {r['hwm_growth_mb']:.1f} MB"
                f" | {copy_rate:,.0f} ({c['seconds']:.2f} s, {c['mb']:.0f} MB)"
                f" | {rate / copy_rate:.0%} |"
            )
        best = max(r["rows"] / r["seconds"] for r in results)
        worst_growth = max(r["growth_mb"] for r in results)
        verdict = best >= 100_000 and worst_growth < 50
        print(
            f"\nbest {best:,.0f} rows/s (target 100,000), peak RSS growth {worst_growth:.1f} MB"
            f" (target < 50 MB): {'met' if verdict else 'NOT met'}"
        )
    finally:
        if server is not None:
            server.stop()
        await close_database()
        await drop_database(args.admin_dsn, name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
