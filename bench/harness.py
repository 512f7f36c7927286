"""What every benchmark shares: scratch databases, server processes, load drivers (httpx
clients and wrk), percentiles, and CPU and memory meters read from /proc.

The benchmarks run as modules from the project root (`.venv/bin/python -m bench.NAME`); a
server they start imports this checkout (ROOT first on PYTHONPATH), whichever virtualenv
runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_DSN = os.environ.get(
    "USAGEGRAPH_BENCH_PG",
    os.environ.get("USAGEGRAPH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY = "query Ready { __typename }"
WRK_SCRIPT = ROOT / "bench" / "wrk_post.lua"

Draw = TypeVar("Draw")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: Sequence[float], q: float) -> float:
    """The value at quantile q (nearest rank, in the values' unit); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine_line() -> str:
    return f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


# -------------------------------------------------------------------- /proc meters


def _proc_ticks(pid: int | str) -> tuple[str, int] | None:
    """(comm, utime + stime) of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return comm, int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used so far."""
    found = _proc_ticks(pid)
    if found is None:
        raise ProcessLookupError(pid)
    return found[1] / CLK_TCK


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def _postgres_ticks() -> dict[int, int]:
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            found = _proc_ticks(entry.name)
            if found is not None and found[0] == "postgres":
                ticks[int(entry.name)] = found[1]
    return ticks


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return total - idle, total


async def backend_cpu(
    admin: asyncpg.Connection, database: str, named: tuple[str, bool] | None = None
) -> dict[int, float]:
    """CPU seconds so far of each client backend of `database`; with `named` (an
    application_name, and whether to take the backends carrying it or the others) only
    those."""
    name, carrying = named or ("", True)
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'"
        " AND ($2 OR (application_name = $3) = $4)",
        database,
        named is None,
        name,
        carrying,
    )
    seconds = {}
    for row in rows:
        try:
            seconds[row["pid"]] = process_cpu_seconds(row["pid"])
        except (FileNotFoundError, ProcessLookupError):  # ended since
            continue
    return seconds


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """The CPU seconds backends spent between two `backend_cpu` readings (a backend started
    in between counts from zero)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@dataclass
class CpuSnapshot:
    wall: float
    client: float
    server: int | None
    postgres: dict[int, int]
    machine: tuple[int, int]

    @classmethod
    def take(cls, server_pid: int | None) -> CpuSnapshot:
        server = None
        if server_pid is not None:
            found = _proc_ticks(server_pid)
            server = found[1] if found else None
        return cls(
            time.perf_counter(), time.process_time(), server, _postgres_ticks(), _machine_ticks()
        )


@dataclass
class CpuUse:
    """CPU seconds used in a window by this process (client), the server, every postgres
    process, and the machine's busy cores on average."""

    wall: float
    client: float
    server: float | None
    postgres: float
    machine_cores: float

    @property
    def others(self) -> float:
        """Cores busy outside the server, this process and PostgreSQL."""
        mine = self.client + (self.server or 0.0) + self.postgres
        return self.machine_cores - mine / self.wall

    @classmethod
    def between(cls, a: CpuSnapshot, b: CpuSnapshot) -> CpuUse:
        server = None
        if a.server is not None and b.server is not None:
            server = (b.server - a.server) / CLK_TCK
        postgres = sum(t - a.postgres.get(pid, 0) for pid, t in b.postgres.items()) / CLK_TCK
        busy, total = b.machine[0] - a.machine[0], b.machine[1] - a.machine[1]
        cores = (os.cpu_count() or 1) * busy / total if total else float("nan")
        return cls(b.wall - a.wall, b.client - a.client, server, postgres, cores)


# --------------------------------------------------------------- scratch databases


def database_urls(admin_dsn: str, name: str) -> tuple[str, str]:
    """(the server's DATABASE_URL, plain asyncpg DSN) of database `name` on the admin DSN's
    server."""
    parts = urlsplit(admin_dsn)
    plain = urlunsplit(("postgresql", parts.netloc, f"/{name}", parts.query, ""))
    return urlunsplit(("postgres", parts.netloc, f"/{name}", parts.query, "")), plain


async def create_database(admin_dsn: str, prefix: str = "usagegraph_bench") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
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


async def open_database(settings: Any) -> None:
    """Migrates the database of `settings` and binds the ORM to it in this process."""
    from tortoise import Tortoise
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from api.database import apply_migrations, close_database, init_database

    await apply_migrations(settings)
    # migrate() leaves Tortoise bound to its own setup: bind the models afresh.
    await close_database()
    await Tortoise._reset_apps()
    EXECUTOR_CACHE.clear()
    await init_database(settings)


async def wait_for_connections(admin_dsn: str, needed: int, patience: float = 600.0) -> None:
    """Waits until PostgreSQL has `needed` free connection slots (other processes on the
    machine share its max_connections), or fails after `patience` seconds."""
    deadline = time.monotonic() + patience
    announced = False
    while True:
        admin = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            free = await admin.fetchval(
                "SELECT current_setting('max_connections')::int"
                " - current_setting('superuser_reserved_connections')::int"
                " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
            )
        finally:
            await admin.close()
        if free >= needed:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL has {free} free connections, {needed} needed")
        if not announced:
            print(f"  waiting for {needed} free PostgreSQL connections ({free} free)", flush=True)
            announced = True
        await asyncio.sleep(1.0)


# ------------------------------------------------------------------------- servers


def usagegraph_serve(
    port: int, *, access_log: bool = False, python: str = sys.executable
) -> list[str]:
    """`usagegraph serve` on `port`, run by `python` (default: this interpreter)."""
    serve = ["serve", "--port", str(port), *(() if access_log else ("--no-access-log",))]
    return [python, "-c", "from api.cli import main; main()", *serve]


def checkout_python(checkout: Path) -> str:
    """The interpreter that runs a checkout's server: this one for this checkout, else the
    one of the other checkout's own `.venv`."""
    return sys.executable if checkout == ROOT else str(checkout / ".venv" / "bin" / "python")


@dataclass
class Server:
    """A server process started by `start_server`, its log and its address."""

    process: subprocess.Popen[bytes]
    base: str  # http://127.0.0.1:<port>
    log: Path
    command: str

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        """Its GraphQL endpoint."""
        return f"{self.base}/graphql"

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully and flushes the request log), then
        SIGKILL after 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def ready(self, key: str, patience: float = 60.0) -> None:
        """Waits until an authenticated query answers 200 without errors."""
        deadline = time.monotonic() + patience
        body = {"query": READY}
        async with httpx.AsyncClient(timeout=10.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the server exited ({self.process.returncode}):\n{self.tail()}"
                    )
                try:
                    answer = await client.post(
                        self.url, json=body, headers={"Authorization": f"Bearer {key}"}
                    )
                    if answer.status_code == 200 and not answer.json().get("errors"):
                        return
                    raise RuntimeError(
                        f"the server answered {answer.status_code}: {answer.text[:300]}"
                    )
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the server did not answer in {patience:g} s")
                await asyncio.sleep(0.1)


def start_server(
    command: Callable[[int], list[str]],
    env: dict[str, str],
    log_dir: Path,
    cwd: Path = ROOT,
    checkout: Path = ROOT,
    peer: bool = False,
) -> Server:
    """Starts `command(port)` on a free port with `env` over this process's environment and
    `checkout` (default: this one) first on PYTHONPATH; its output goes to a log file in
    `log_dir`. With USAGEGRAPH_BENCH_SERVER_CHECKOUT set to another checkout (with its own
    .venv), a server this interpreter would run is that checkout's, run by its interpreter:
    the same benchmark, before and after a change, in interleaved runs. A `peer` (another
    program to compare with, in `bench/`) always runs from this checkout."""
    port = free_port()
    argv = command(port)
    other = os.environ.get("USAGEGRAPH_BENCH_SERVER_CHECKOUT")
    if other and not peer and checkout == ROOT and argv[0] == sys.executable:
        checkout = cwd = Path(other)
        argv[0] = checkout_python(checkout)
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(checkout), os.environ.get("PYTHONPATH")])
    )
    log = log_dir / f"server-{port}.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=handle, stderr=handle)
    return Server(process, f"http://127.0.0.1:{port}", log, " ".join(argv))


async def first_answer(
    endpoint: str, key: str, body: dict[str, Any], patience: float = 20
) -> httpx.Response:
    """The first answer of a server just started (retried for `patience` seconds while it
    does not listen yet)."""
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(int(patience * 10)):
            try:
                return await client.post(
                    endpoint, json=body, headers={"Authorization": f"Bearer {key}"}
                )
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"no server answered at {endpoint}")


# --------------------------------------------------------------------- load: loops


@dataclass
class Loop:
    """What a closed loop completed: calls in the measured window (with their latencies
    in seconds) and in the whole run, warm-up included."""

    seconds: float
    completed: int = 0
    total: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list)
    start: float = 0.0  # perf_counter at the window's start and end
    end: float = 0.0


async def closed_loop(
    call: Callable[[Draw], Awaitable[Any]],
    draws: Sequence[Draw],
    tasks: int,
    warmup: float,
    seconds: float,
    seed: int,
    meter: Callable[[float, float], Awaitable[None]] | None = None,
) -> Loop:
    """`tasks` concurrent tasks each calling `call(random draw)` and waiting for it before
    the next, for `warmup` then `seconds`; a call raising counts as an error. `meter(start,
    end)` runs beside them (to read meters at the window's ends). Every run with the same
    seed draws the same sequence per task."""
    begin = time.perf_counter()
    loop = Loop(seconds, start=begin + warmup, end=begin + warmup + seconds)

    async def worker(index: int) -> None:
        rng = random.Random(seed * 1_000 + index)
        while True:
            t0 = time.perf_counter()
            if t0 >= loop.end:
                return
            try:
                await call(rng.choice(draws))
            except Exception as exc:
                loop.errors += 1
                loop.first_error = loop.first_error or f"{type(exc).__name__}: {exc}"
                continue
            t1 = time.perf_counter()
            loop.total += 1
            if loop.start <= t1 < loop.end:
                loop.completed += 1
                loop.latencies.append(t1 - t0)

    metered = () if meter is None else (meter(loop.start, loop.end),)
    await asyncio.gather(*metered, *(worker(i) for i in range(tasks)))
    return loop


async def until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.perf_counter()))


Body = dict[str, Any] | list[dict[str, Any]]  # a request body, or bodies to draw from
# What bench/wrk_post.lua counts as a failed answer: a non-empty `errors` list (GraphQL's or a
# payload's) or a consumption answered without its balance.
FAILED_ANSWER = re.compile(rb'"errors"\s*:\s*\[\s*\{|"balance"\s*:\s*null')


def _bodies(body: Body) -> list[dict[str, Any]]:
    return body if isinstance(body, list) else [body]


async def httpx_load(
    url: str, key: str, body: Body, clients: int, warmup: float, seconds: float
) -> dict[str, float]:
    """`clients` keep-alive httpx clients POSTing `body` (a random one of a list per
    request): rate, p50 and p99 (ms) of the window, and the answers that were not 200 or
    carried errors."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        limits=limits, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as client:

        async def post(drawn: dict[str, Any]) -> None:
            response = await client.post(url, json=drawn)
            if response.status_code != 200 or FAILED_ANSWER.search(response.content):
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

        loop = await closed_loop(post, _bodies(body), clients, warmup, seconds, 1)
    return {
        "rate": loop.completed / seconds,
        "p50": percentile(loop.latencies, 0.5) * 1000,
        "p99": percentile(loop.latencies, 0.99) * 1000,
        "errors": loop.errors,
    }


# ----------------------------------------------------------------------- load: wrk


def find_wrk() -> str | None:
    return shutil.which("wrk")


@dataclass
class WrkRun:
    """One wrk run with `bench/wrk_post.lua`: its WRK_RESULT line and wrk's CPU seconds
    (user + system, from wait4 of exactly that child)."""

    result: dict[str, float]
    cpu: float
    output: Path

    @property
    def failed_statuses(self) -> int:
        r = self.result
        return int(r["non200"] if r["check_every"] else r["status_gt399"])

    @property
    def errors(self) -> int:
        """Failed answers and socket errors. Without the `response` hook (check every 0)
        only wrk's own status count (> 399) is known."""
        r = self.result
        sockets = r["connect"] + r["read"] + r["write"] + r["timeout"]
        return int(self.failed_statuses + r["bad_body"] + sockets)

    @property
    def answered(self) -> int:
        """Successful answers (of the checked bodies, all sound)."""
        return int(self.result["requests"] - self.failed_statuses - self.result["bad_body"])

    @property
    def seconds(self) -> float:
        return self.result["duration_us"] / 1e6

    def describe_errors(self) -> str:
        r = self.result
        return (
            f"wrk: {self.failed_statuses} non-200 answers, {int(r['bad_body'])} of"
            f" {int(r['checked'])} checked bodies with errors, socket errors connect"
            f" {int(r['connect'])} read {int(r['read'])} write {int(r['write'])} timeout"
            f" {int(r['timeout'])} (output: {self.output})"
        )


def write_bodies(bodies: Sequence[dict[str, Any]], path: Path) -> None:
    """The request bodies `bench/wrk_post.lua` draws from, one JSON document a line."""
    with open(path, "w", encoding="utf-8") as handle:
        for body in bodies:
            handle.write(json.dumps(body, separators=(",", ":")) + "\n")


def _spawn(command: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as handle:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def _wait4(pid: int) -> tuple[int, float]:
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


async def run_wrk(
    url: str,
    key: str,
    bodies: Path,
    connections: int,
    seconds: float,
    out: Path,
    *,
    threads: int = 1,
    check_every: int = 1,
    seed: int = 1,
) -> WrkRun:
    """`wrk -t<threads> -c<connections> -d<seconds>s --latency` with bench/wrk_post.lua,
    POSTing a random body of the file `bodies` per request with `Authorization: Bearer
    <key>`."""
    wrk = find_wrk()
    if wrk is None:
        raise RuntimeError("wrk is not on PATH (e.g. `apt-get install wrk`)")
    env = {
        **os.environ,
        "USAGEGRAPH_WRK_BODIES": str(bodies),
        "USAGEGRAPH_WRK_KEY": key,
        "USAGEGRAPH_WRK_SEED": str(seed),
        "USAGEGRAPH_WRK_CHECK_EVERY": str(check_every),
    }
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",  # wrk takes whole seconds
        "--timeout",
        "60s",  # the httpx clients' timeout; wrk's default 2 s would drop slow answers
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    process = _spawn(command, env, out)
    try:
        code, cpu = await asyncio.to_thread(_wait4, process.pid)
    except BaseException:
        process.kill()
        raise
    process.returncode = code  # reaped by wait4
    text = _read(out)
    line = next((x for x in text.splitlines() if x.startswith("WRK_RESULT ")), None)
    if code != 0 or line is None:
        raise RuntimeError(f"wrk failed ({code}): {' '.join(command)}\n{text[-2000:]}")
    result = {k: float(v) for k, v in (item.split("=", 1) for item in line.split()[1:])}
    return WrkRun(result, cpu, out)


async def wrk_load(
    url: str, key: str, body: Body, clients: int, warmup: float, seconds: float
) -> dict[str, float]:
    """`httpx_load`'s figures with wrk as the load generator (a C program: a small fraction
    of the CPU the httpx clients take)."""
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        write_bodies(_bodies(body), bodies)
        threads = min(2, clients)
        if warmup > 0:
            await run_wrk(url, key, bodies, clients, warmup, Path(tmp) / "warm", threads=threads)
        run = await run_wrk(url, key, bodies, clients, seconds, Path(tmp) / "run", threads=threads)
        if run.errors:  # said, not hidden in a lower rate
            print(f"  {url}: {run.describe_errors()}", flush=True)
    return {
        "rate": run.answered / run.seconds,
        "p50": run.result["p50_us"] / 1000,
        "p99": run.result["p99_us"] / 1000,
        "errors": run.errors,
    }


Runner = Callable[[str, str, Body, int, float, float], Awaitable[dict[str, float]]]


def load_runner(choice: str | None) -> tuple[str, Runner]:
    """The load generator asked for, else wrk when installed, else httpx."""
    name = choice or ("wrk" if find_wrk() else "httpx")
    return name, wrk_load if name == "wrk" else httpx_load


async def measured_round(
    server: Server,
    runner: Runner,
    key: str,
    body: Body,
    clients: int,
    seconds: float,
    admin: asyncpg.Connection,
    database: str,
    named: tuple[str, bool] | None = None,
) -> dict[str, float]:
    """One round of load, with the server's CPU per request and the database's: all its
    backends (one server is loaded at a time), or those `named` picks (`backend_cpu`); a
    backend started during the round counts from zero."""
    pg_before = await backend_cpu(admin, database, named)
    cpu_before = process_cpu_seconds(server.pid)
    result = await runner(server.url, key, body, clients, 0, seconds)
    cpu = process_cpu_seconds(server.pid) - cpu_before
    postgres = cpu_since(pg_before, await backend_cpu(admin, database, named))
    requests = max(1.0, result["rate"] * seconds)
    return {**result, "server_ms": cpu * 1000 / requests, "pg_ms": postgres * 1000 / requests}


def against_arguments(parser: argparse.ArgumentParser, what: str, rounds: int) -> None:
    """`--against DIR` and `--rounds`: interleaved rounds against another checkout."""
    parser.add_argument(
        "--against",
        type=Path,
        help=f"another checkout (with its own .venv) whose server runs interleaved rounds"
        f" of {what} against this one's",
    )
    parser.add_argument("--rounds", type=int, default=rounds, help="rounds with --against")


Rounds = list[dict[str, float]]


def print_comparison(title: str, rows: Sequence[tuple[str, Rounds, Rounds, str, str]]) -> None:
    """A table of interleaved rounds: for each row (label, this checkout's rounds, the other
    checkout's, the figure, its format), both medians and their ratio."""
    print(f"\n| {title} | this checkout | the other | ratio |")
    print("|---|---|---|---|")
    for label, ours, theirs, key, form in rows:
        mine = statistics.median(r[key] for r in ours)
        other = statistics.median(r[key] for r in theirs)
        ratio = mine / other if other else float("nan")
        print(f"| {label} | {form.format(mine)} | {form.format(other)} | {ratio:.2f} |")


def rates_line(ours: Rounds, theirs: Rounds, clients: int) -> str:
    """The rates of each pair of rounds, and the machine's load."""
    each = ", ".join(
        f"{a['rate']:,.0f}/{b['rate']:,.0f}" for a, b in zip(ours, theirs, strict=True)
    )
    return f"(rounds at {clients} clients, this/other: {each}; {machine_line()})"


# ------------------------------------------------------------------------ profiler


class PySpy:
    """py-spy sampling a server while a phase runs, writing raw collapsed stacks."""

    def __init__(self, enabled: bool) -> None:
        self.executable = None
        if enabled:
            self.executable = shutil.which(
                "py-spy", path=str(Path(sys.executable).parent)
            ) or shutil.which("py-spy")
            if self.executable is None:
                raise SystemExit("profiling needs py-spy: .venv/bin/pip install py-spy")
        self.process: subprocess.Popen[bytes] | None = None
        self.timed = False
        self.out: Path | None = None

    def start(self, pid: int, out: Path, seconds: float | None = None, rate: int = 250) -> None:
        """Samples `pid` for `seconds` (until `stop` when None) into the file `out`."""
        self.out = out
        if self.executable is None:
            return
        duration = () if seconds is None else ("--duration", str(max(1, round(seconds))))
        self.timed = seconds is not None
        self.process = subprocess.Popen(
            [
                *(self.executable, "record", "--pid", str(pid), "--rate", str(rate)),
                *("--nonblocking", "--function", "--format", "raw", "--output", str(self.out)),
                *duration,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> str:
        """Ends the sampling (waits for a timed one) and names the file written."""
        if self.process is None:
            return ""
        if not self.timed and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait()
        self.process = None
        return f"  (py-spy profile: {self.out})"
