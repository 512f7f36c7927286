"""Every benchmark, one after the other, in one run: the figures of docs/performance.md.

    .venv/bin/python -m bench                      # the performance page's runs
    .venv/bin/python -m bench --quick              # each small and short: checks they all run
    .venv/bin/python -m bench --only ledger,export # some of them
    .venv/bin/python -m bench --against DIR        # the dashboard also against checkout DIR

Each benchmark runs as its own process (`python -m bench.NAME`) with the arguments the
performance page gives for it; its output passes through as it comes, and a summary at the
end says how long each took and which failed (the exit status is 1 if any did).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.harness import ROOT, machine_line


@dataclass(frozen=True)
class Benchmark:
    name: str
    arguments: tuple[str, ...] = ()  # the performance page's run (not with --quick)


BENCHMARKS = (
    Benchmark("ledger"),
    Benchmark("graphql_consume", ("--load", "wrk", "--no-access-log", "--seconds", "20")),
    Benchmark("consume_peer"),
    Benchmark("dashboard", ("--parts", "--statements")),
    Benchmark("dashboard_peer", ("--rounds", "5", "--seconds", "10", "--single-seconds", "5")),
    Benchmark("ws_fanout"),
    Benchmark("export"),
    Benchmark("request_log"),
    Benchmark("webhooks", ("--rounds", "6", "--round-seconds", "5")),
    Benchmark("demo"),
)


def command(benchmark: Benchmark, options: argparse.Namespace) -> list[str]:
    arguments = ["--quick"] if options.quick else list(benchmark.arguments)
    if benchmark.name == "dashboard" and options.against is not None:
        arguments += ["--against", options.against, "--rounds", "5"]
    return [sys.executable, "-m", f"bench.{benchmark.name}", *arguments]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark small and short")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        help="comma-separated names (" + ", ".join(b.name for b in BENCHMARKS) + ")",
    )
    parser.add_argument(
        "--against", help="bench.dashboard's interleaved rounds against this checkout"
    )
    options = parser.parse_args()
    chosen = [b for b in BENCHMARKS if options.only is None or b.name in options.only]
    unknown = (options.only or set()) - {b.name for b in BENCHMARKS}
    if unknown:
        parser.error(f"no benchmark named {', '.join(sorted(unknown))}")
    results: list[tuple[str, int, float]] = []
    for benchmark in chosen:
        argv = command(benchmark, options)
        print(f"\n=== python -m bench.{benchmark.name} {' '.join(argv[3:])}", flush=True)
        started = time.monotonic()
        status = subprocess.run(argv, cwd=ROOT).returncode
        results.append((benchmark.name, status, time.monotonic() - started))
    print(f"\n=== summary ({machine_line()})")
    for name, status, seconds in results:
        print(f"{name:<16} {'ok' if status == 0 else f'FAILED ({status})':<12} {seconds:6.0f} s")
    return 0 if all(status == 0 for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
