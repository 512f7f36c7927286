"""graphql-http's server audits (the GraphQL over HTTP conformance suite) against the real
server, without a credential and with an organization key: every audit ok, warnings and
notices included. Node's dependencies are installed from the committed lock file when
absent; without npm the test skips, or fails where services are required."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES

AUDIT_DIR = Path(__file__).resolve().parents[1] / "http_audit"
INSTALL_SECONDS = 300
AUDIT_SECONDS = 120


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = "graphql-http's audit needs Node.js and npm on PATH"
        if REQUIRE_SERVICES:
            pytest.fail(reason)
        pytest.skip(reason)
    return node, npm


async def _run(*command: str, env: dict[str, str] | None = None, seconds: float) -> bytes:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=AUDIT_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), seconds)
    assert process.returncode in (0, 1), f"{command} failed: {err.decode()[-2000:]}"
    return out


async def _installed(npm: str) -> None:
    if (AUDIT_DIR / "node_modules" / "graphql-http").is_dir():
        return
    await _run(npm, "ci", "--no-audit", "--no-fund", seconds=INSTALL_SECONDS)


@pytest.mark.parametrize("credential", [False, True], ids=["anonymous", "organization key"])
async def test_every_graphql_http_server_audit_is_ok(server, credential: bool) -> None:
    node, npm = _tools()
    await _installed(npm)
    env = dict(os.environ)
    env.pop("USAGEGRAPH_AUDIT_AUTHORIZATION", None)
    if credential:
        env["USAGEGRAPH_AUDIT_AUTHORIZATION"] = f"Bearer {server.organization_key}"
    # run in this event loop's subprocess support: the server answers in this loop
    out = await _run(node, "audit.mjs", server.graphql, env=env, seconds=AUDIT_SECONDS)
    results = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert len(results) >= 40, out.decode()  # the whole list ran
    assert {result["status"] for result in results} == {"ok"}, [
        result for result in results if result["status"] != "ok"
    ]
