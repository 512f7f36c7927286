"""`usagegraph serve --demo` as a newcomer runs it: a real process on a fresh SQLite file
(or on the database a test names)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from api.app import create_app
from api.settings import Settings


@dataclass(frozen=True)
class DemoServer:
    url: str
    port: int
    key: str  # the API key `serve --demo` printed
    database: Path
    page_link: str  # the Usage page link it printed (the key in the URL fragment)
    application_id: str  # the application id it printed


def usagegraph(*args: str) -> list[str]:
    return [sys.executable, "-c", "from api.cli import main; main()", *args]


@contextmanager
def demo_server(
    directory: Path,
    timeout: float = 120,
    port: int | None = None,
    database_url: str | None = None,
) -> Iterator[DemoServer]:
    """Serves the demo until the block ends; yields once it answers on /healthz. With `port`
    (a restart: the same directory, so the same database), on that port; with
    `database_url`, on that database instead of the directory's SQLite file."""
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    database = directory / "demo.sqlite3"
    env = {**os.environ, "DATABASE_URL": database_url or f"sqlite://{database}"}
    env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        usagegraph("serve", "--demo", "--port", str(port)),
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while "API key" not in printed and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line or process.poll() is None, "serve exited early"
            name, _, value = line.partition(":")
            printed[name.strip()] = value.strip()
        assert "API key" in printed and "Usage page" in printed, "no API key or page link"
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.05)
        yield DemoServer(
            url=url,
            port=port,
            key=printed["API key"],
            database=database,
            page_link=printed["Usage page"],
            application_id=printed["application id"],
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


@asynccontextmanager
async def served(backend, **overrides: Any) -> AsyncIterator[tuple[str, Any]]:
    """An app with its own settings under uvicorn (lifespan off, as the `server` fixture:
    the test process owns the database), shut down as a process would be: uvicorn stops
    taking requests and finishes those in flight, then the log writer flushes."""
    settings = Settings(
        DATABASE_URL=backend.settings.database_url,
        **{"REDIS_URL": backend.settings.redis_url, **overrides},
    )
    app = create_app(settings, migrate=False)
    await app.state.realtime.start()
    await app.state.request_log.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.ensure_future(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        uv.should_exit = True
        await task
        await app.state.request_log.close()
        await app.state.realtime.close()
