"""The README's first command, `usagegraph serve --demo`, on a fresh SQLite file: the time
and the CPU of the process up to its first answer, beside `usagegraph serve` on a fresh
file without the demo (migrations and start-up alone), in alternating runs.

    .venv/bin/python -m bench.demo            # 3 runs of each
    .venv/bin/python -m bench.demo --runs 5

A newcomer's first impression: the demo books 60 days of history through the service's own
operations before it answers (docs/demo.md), and this says what that costs beyond starting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness import ROOT, free_port, machine_line, process_cpu_seconds, usagegraph_serve


@dataclass(frozen=True, slots=True)
class Start:
    seconds: float  # from the start to the first answer
    cpu: float  # CPU seconds of the process up to then


def started(demo: bool, directory: Path, patience: float = 300.0) -> Start:
    """Starts `usagegraph serve` (with `--demo`) on a fresh SQLite file in `directory` and
    measures it up to its first answer: for the demo, its GraphQL endpoint answering the key
    it printed; without, /healthz."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite://{directory / 'usagegraph.sqlite3'}"}
    env.pop("REDIS_URL", None)
    command = usagegraph_serve(port) + (["--demo"] if demo else [])
    began = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=directory,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        key = _printed_key(process) if demo else None
        url = f"http://127.0.0.1:{port}"
        deadline = began + patience
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited ({process.returncode})")
            try:
                if key is None:
                    answer = httpx.get(f"{url}/healthz", timeout=5)
                else:
                    answer = httpx.post(
                        f"{url}/graphql",
                        json={"query": "{ viewer { organization { name } } }"},
                        headers={"Authorization": f"Bearer {key}"},
                        timeout=5,
                    )
                if answer.status_code == 200 and "errors" not in answer.json():
                    return Start(time.monotonic() - began, process_cpu_seconds(process.pid))
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer in {patience:g} s")
            time.sleep(0.02)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _printed_key(process: subprocess.Popen[str]) -> str:
    """The API key `serve --demo` prints once its history is booked."""
    assert process.stdout is not None
    for line in process.stdout:
        name, _, value = line.partition(":")
        if name.strip() == "API key":
            return value.strip()
    raise RuntimeError(f"serve --demo printed no API key ({process.wait()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--quick", action="store_true", help="one run of each")
    options = parser.parse_args()
    runs = 1 if options.quick else options.runs
    found: dict[bool, list[Start]] = {True: [], False: []}
    for number in range(runs):
        for demo in (True, False) if number % 2 == 0 else (False, True):
            with tempfile.TemporaryDirectory(prefix="usagegraph_demo_") as directory:
                found[demo].append(started(demo, Path(directory)))
    cpu = {demo: statistics.median(s.cpu for s in starts) for demo, starts in found.items()}
    print(f"| fresh SQLite file, {runs} runs each (medians) | to the first answer | CPU |")
    print("|---|---|---|")
    for demo, label in ((True, "`serve --demo`"), (False, "`serve`, no demo")):
        seconds = statistics.median(s.seconds for s in found[demo])
        print(f"| {label} | {seconds:.2f} s | {cpu[demo]:.2f} s |")
    extra = cpu[True] - cpu[False]
    print(f"booking the demo's 60 days: {extra:.2f} s of CPU ({machine_line()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
