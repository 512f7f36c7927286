"""`usagegraph serve --demo` as a newcomer runs it: a real process on a fresh SQLite file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class DemoServer:
    url: str
    port: int
    key: str  # the API key `serve --demo` printed
    database: Path
    page_link: str  # the Usage page link it printed (the key in the URL fragment)


@contextmanager
def demo_server(
    directory: Path, timeout: float = 120, port: int | None = None
) -> Iterator[DemoServer]:
    """Serves the demo until the block ends; yields once it answers on /healthz. With `port`
    (a restart: the same directory, so the same database), on that port."""
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    database = directory / "demo.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite://{database}"}
    env.pop("REDIS_URL", None)
    command = [sys.executable, "-c", "from api.cli import main; main()", "serve", "--demo"]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        key = page_link = None
        deadline = time.monotonic() + timeout
        while key is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line or process.poll() is None, "serve exited early"
            if line.startswith("Usage page:"):
                page_link = line.split()[-1]
            if line.startswith("API key:"):
                key = line.split()[-1]
        assert key and page_link, "no API key or Usage page link printed"
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        yield DemoServer(url, port, key, database, page_link)
    finally:
        process.terminate()
        process.wait(timeout=30)
