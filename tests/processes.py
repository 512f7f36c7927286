"""Server processes for the tests that run several (docs/operations.md#several-processes): a
database of their own, migrated, with an organization key, and `usagegraph serve`
subprocesses on it that a test may SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from tests.conftest import _drop_postgres_database, _postgres_database


@dataclass
class Cluster:
    """A database of these tests' own (so that no other relay shares it), migrated, with an
    organization key; its servers are subprocesses."""

    database_url: str
    organization_key: str


@dataclass
class Entry:
    """What `tests.applications.application` needs of a server: its GraphQL URL and an
    organization key."""

    graphql: str
    organization_key: str


def cli(database_url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


@asynccontextmanager
async def cluster_database() -> AsyncIterator[Cluster]:
    url = await _postgres_database()
    assert url is not None
    try:
        await asyncio.to_thread(cli, url, "migrate")
        output = await asyncio.to_thread(cli, url, "create-org", "cluster tests")
        yield Cluster(url, output.strip().splitlines()[-1])
    finally:
        await _drop_postgres_database(url)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Process:
    url: str
    popen: subprocess.Popen

    @property
    def graphql(self) -> str:
        return f"{self.url}/graphql"

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, wait: float = 10) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(timeout=wait)


def start_server(
    cluster: Cluster, redis_url: str, *options: str, env: dict[str, str] | None = None
) -> Process:
    """`usagegraph serve` on a free port, once it answers; `env` adds settings."""
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": cluster.database_url,
        "REDIS_URL": redis_url,
        **(env or {}),
    }
    popen = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from api.cli import main; main()",
            "serve",
            "--port",
            str(port),
            *list(options),
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/graphql", headers={"Accept": "text/html"}, timeout=2)
            return Process(url, popen)
        except httpx.TransportError:
            assert popen.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
