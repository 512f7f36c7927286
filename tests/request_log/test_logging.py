"""The service's logs (api/logging_setup.py, resolvers/error_logging.py), read as an
operator reads them: an expected client error is one line at most and no traceback, an
unexpected one is a traceback with the request id, client input is never logged whole,
and JSON lines parse and carry the request id. Through the real server on both backends:
in this process with the setup writing to a buffer, and `usagegraph serve` in a process
of its own."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.logging_setup import LogFormat, configure_logging

MAX_LINE = 4_096  # "a few KB": a message is cut at 2,000 characters, plus its prefix
BIG_QUERY_BYTES = 900_000
_CLIENT_LOGGERS = ("httpx", "httpcore")  # the test's own client: not the server's lines
_TOUCHED_LOGGERS = (
    "",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "tortoise",
    "aiosqlite",
    *_CLIENT_LOGGERS,
)


@contextmanager
def logs_captured(log_format: LogFormat) -> Iterator[io.StringIO]:
    """The service's setup at DEBUG (the most it writes), into a buffer; the test
    process's loggers as they were afterwards."""
    saved = {
        name: (list(logger.handlers), logger.level, logger.propagate)
        for name in _TOUCHED_LOGGERS
        for logger in [logging.getLogger(name)]
    }
    buffer = io.StringIO()
    configure_logging(log_format, "DEBUG")
    [handler] = logging.getLogger().handlers
    handler.setStream(buffer)  # type: ignore[attr-defined]
    for name in _CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield buffer
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


def _lines_of(text: str, request_id: str) -> list[str]:
    """The lines the server wrote for a request (its id in their request id slot), but
    the access log's (one per request, not an error's)."""
    marker = f"[{request_id}]"
    return [line for line in text.splitlines() if marker in line and "uvicorn.access" not in line]


async def _post(http, server, request_id: str, body: Any, key: str | None) -> httpx.Response:
    headers = {"X-Request-Id": request_id}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return await http.post(server.graphql, json=body, headers=headers)


def _expected_errors(tag: str) -> dict[str, tuple[dict[str, Any], bool]]:
    """Requests answered with an expected error: (body, sent with the key)."""
    return {
        f"{tag}-unauthenticated": ({"query": "{ viewer { role } }"}, False),
        f"{tag}-not-found": ({"query": "{ application(id: 999999999) { id } }"}, True),
        f"{tag}-invalid": ({"query": "{ application(id: 1) { nope } }"}, True),
        f"{tag}-syntax": ({"query": "{ application(id: 1) { id }"}, True),
        f"{tag}-variable": (
            {"query": "query($id: ID!) { application(id: $id) { id } }", "variables": {}},
            True,
        ),
        f"{tag}-nul": ({"query": '{ application(id: "1\\u0000") { id } }'}, True),
    }


async def test_an_expected_error_logs_one_line_without_traceback(server, http) -> None:
    tag = uuid.uuid4().hex[:8]
    requests = _expected_errors(tag)
    with logs_captured("text") as buffer:
        for request_id, (body, keyed) in requests.items():
            response = await _post(
                http, server, request_id, body, server.organization_key if keyed else None
            )
            assert response.json()["errors"], (request_id, response.text)
        await _post(
            http, server, f"{tag}-fine", {"query": "{ viewer { role } }"}, server.organization_key
        )
    text = buffer.getvalue()
    assert "Traceback" not in text and "GraphQL request:" not in text, text[:3000]
    for request_id in requests:
        lines = _lines_of(text, request_id)
        assert len(lines) <= 1, (request_id, lines)
        assert all(" DEBUG usagegraph.graphql " in line and len(line) < 500 for line in lines)
    assert _lines_of(text, f"{tag}-fine") == []
    assert f"[{tag}-unauthenticated] UNAUTHENTICATED at viewer: " in text
    assert f"[{tag}-not-found] NOT_FOUND at application: " in text


def _big_queries() -> dict[str, str]:
    """900 KB documents that bring client input into an error's text."""
    filler = "x" * BIG_QUERY_BYTES
    return {
        "literal": f'{{ application(id: 1) {{ endUsers(first: "{filler}") {{ totalCount }} }} }}',
        "padding": "{ application(id: 1) { nope } }" + " " * BIG_QUERY_BYTES,
        # a newline is two bytes in JSON (\\n)
        "lines": "{ application(id: 1) {" + "\n" * (BIG_QUERY_BYTES // 2) + " nope } }",
        "tokens": "{ " + "a " * (BIG_QUERY_BYTES // 2) + "}",
        "unterminated": '{ application(id: "' + filler,
        "field": "{ " + filler + " }",
    }


async def test_a_900_kb_query_is_never_logged_whole(server, http) -> None:
    tag = uuid.uuid4().hex[:8]
    with logs_captured("text") as buffer:
        for name, query in _big_queries().items():
            request_id = f"{tag}-{name}"
            response = await _post(
                http, server, request_id, {"query": query}, server.organization_key
            )
            assert response.status_code in (200, 400), (name, response.status_code)
            assert response.json()["errors"], name
    text = buffer.getvalue()
    assert len(text) < 20_000, len(text)
    assert max(map(len, text.splitlines())) < MAX_LINE
    for name in _big_queries():
        assert len(_lines_of(text, f"{tag}-{name}")) <= 1, name


async def _unexpected_failure(monkeypatch, http, server, request_id: str) -> httpx.Response:
    """A defect of ours (a resolver's helper failing), with client input in its text."""

    async def defect(*_: Any) -> int:
        raise RuntimeError("a defect while reading " + "q" * 20_000)

    monkeypatch.setattr("resolvers.applications.visible_application", defect)
    response = await _post(
        http,
        server,
        request_id,
        {"query": "{ application(id: 1) { id } }"},
        server.organization_key,
    )
    monkeypatch.undo()
    error = response.json()["errors"][0]
    assert (error["message"], error["extensions"]["code"]) == ("Internal error.", "INTERNAL")
    return response


async def test_an_unexpected_error_logs_a_traceback_with_the_request_id(
    server, http, monkeypatch
) -> None:
    request_id = f"{uuid.uuid4().hex[:8]}-defect"
    with logs_captured("text") as buffer:
        await _unexpected_failure(monkeypatch, http, server, request_id)
    lines = buffer.getvalue().splitlines()
    [first] = [index for index, line in enumerate(lines) if f"[{request_id}]" in line]
    assert (
        f" ERROR usagegraph.graphql [{request_id}] unexpected error at application: "
        in lines[first]
    )
    traceback = lines[first + 1 :]
    assert traceback[0] == "Traceback (most recent call last):", traceback[:3]
    assert any("in defect" in line for line in traceback)
    assert traceback[-1].startswith("RuntimeError: a defect while reading qqq")
    assert max(map(len, lines)) < MAX_LINE


async def test_json_lines_parse_and_carry_the_request_id(server, http, monkeypatch) -> None:
    tag = uuid.uuid4().hex[:8]
    requests = _expected_errors(tag)
    with logs_captured("json") as buffer:
        for request_id, (body, keyed) in requests.items():
            await _post(http, server, request_id, body, server.organization_key if keyed else None)
        await _post(
            http,
            server,
            f"{tag}-big",
            {"query": _big_queries()["literal"]},
            server.organization_key,
        )
        await _unexpected_failure(monkeypatch, http, server, f"{tag}-defect")
    lines = buffer.getvalue().splitlines()
    assert max(map(len, lines)) < 8_192  # a traceback is in its line: clipped line by line
    records = [json.loads(line) for line in lines]
    mine = [r for r in records if r["request_id"].startswith(tag)]
    by_request = {r["request_id"]: r for r in mine}
    assert len(by_request) == len(mine)  # one line a request at most
    assert {f"{tag}-unauthenticated", f"{tag}-not-found", f"{tag}-defect"} <= set(by_request)
    for record in mine:
        if record["request_id"] != f"{tag}-defect":
            assert record["level"] == "DEBUG" and "traceback" not in record, record
    unauthenticated = by_request[f"{tag}-unauthenticated"]["message"]
    assert unauthenticated.startswith("UNAUTHENTICATED at viewer")
    defect = by_request[f"{tag}-defect"]
    assert (defect["level"], defect["logger"]) == ("ERROR", "usagegraph.graphql")
    assert "RuntimeError: a defect while reading" in defect["traceback"]
    assert all(set(r) >= {"time", "level", "logger", "message", "request_id"} for r in records)


# ------------------------------------------------------------ the service's own process


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_serve_writes_json_lines_with_request_ids(backend, server, tmp_path: Path) -> None:
    """`usagegraph serve` applies the setup itself (uvicorn's lines included)."""
    port = _free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": backend.settings.database_url,
        "USAGEGRAPH_LOG_FORMAT": "json",
        "USAGEGRAPH_LOG_LEVEL": "debug",
        "USAGEGRAPH_JOBS": "0",  # the suite's database: nothing of its own to do
    }
    if backend.settings.redis_url:
        environment["REDIS_URL"] = backend.settings.redis_url
    log_path = tmp_path / "serve.log"
    command = Path(sys.executable).parent / "usagegraph"
    with log_path.open("w") as log_file:
        process = await asyncio.create_subprocess_exec(
            command, "serve", "--port", str(port),
            stdout=asyncio.subprocess.DEVNULL, stderr=log_file, env=environment,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(timeout=60) as http:
                for _ in range(300):
                    try:
                        if (await http.get(f"{url}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
                tag = uuid.uuid4().hex[:8]
                headers = {"X-Request-Id": f"{tag}-anonymous"}
                await http.post(
                    f"{url}/graphql", json={"query": "{ viewer { role } }"}, headers=headers
                )
                headers = {
                    "X-Request-Id": f"{tag}-big",
                    "Authorization": f"Bearer {server.organization_key}",
                }
                big = {"query": _big_queries()["literal"]}
                assert (await http.post(f"{url}/graphql", json=big, headers=headers)).json()[
                    "errors"
                ]
        finally:
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.wait(), 30)
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line, uvicorn's included
    assert max(map(len, lines)) < MAX_LINE
    assert {"uvicorn.error", "uvicorn.access", "usagegraph.graphql"} <= {
        r["logger"] for r in records
    }
    found = [(r["logger"], r["level"]) for r in records if r["request_id"] == f"{tag}-anonymous"]
    assert sorted(found) == [("usagegraph.graphql", "DEBUG"), ("uvicorn.access", "INFO")], found
    big_lines = [r for r in records if r["request_id"] == f"{tag}-big"]
    assert ("uvicorn.access", "INFO") in [(r["logger"], r["level"]) for r in big_lines]
    assert len(big_lines) <= 2 and not any("traceback" in r for r in big_lines), big_lines


async def test_an_expected_error_over_a_websocket_logs_one_line(server) -> None:
    """The connection's request id reaches the lines its operations write."""
    from websockets.asyncio.client import connect

    request_id = f"{uuid.uuid4().hex[:8]}-socket"
    subscription = 'subscription { balanceChanged(applicationId: "999999999") { remaining } }'
    url = server.graphql.replace("http", "ws", 1)
    with logs_captured("text") as buffer:
        async with connect(
            url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            additional_headers={"X-Request-Id": request_id},
        ) as ws:
            init = {"authorization": f"Bearer {server.organization_key}"}
            await ws.send(json.dumps({"type": "connection_init", "payload": init}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            subscribe = {"id": "1", "type": "subscribe", "payload": {"query": subscription}}
            await ws.send(json.dumps(subscribe))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert "NOT_FOUND" in json.dumps(answer), answer
    text = buffer.getvalue()
    assert "Traceback" not in text
    lines = _lines_of(text, request_id)
    assert len(lines) == 1 and lines[0].endswith("NOT_FOUND: application not found"), lines
