"""Limits (docs/api.md#limits): query depth, aliases, tokens, request body size and list arguments
are bounded, each refused fast with a clear error; introspection stays on (public contract)."""

from __future__ import annotations

import gc
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import graphql
import httpx
import pytest

from models.accounts import create_organization
from models.credits import EndUser
from models.verify import verify_ledger
from models.webhooks import WebhookEventType, create_endpoint
from resolvers.request_rules import MAX_ALIASES, MAX_DEPTH
from tests.graphql_client import CREATE_API_KEY, CREATE_APPLICATION, PURCHASE, UPSERT, Caller
from tests.ledger_helpers import application_rows
from tests.schema_operations import fields_with_argument, operations

# "Refused fast": CPU seconds this process (client and server: the server fixture runs in
# it) spends on the request. CPU time, not wall-clock time, so that other work on a shared
# 2-core machine does not make the check fail; a refusal costs milliseconds of it.
FAST = 0.5
T = TypeVar("T")
MAX_FIRST = 500
MAX_LIST_INPUT = 1_000


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def app(server, http: httpx.AsyncClient) -> tuple[Caller, str]:
    """An application with a pool, a pack, an End User and a webhook endpoint, and its ADMIN
    key."""
    _, issued = await create_organization(f"limits {uuid.uuid4().hex[:6]}")
    org = Caller(http, server.graphql, issued.secret)
    made = await org(CREATE_APPLICATION, input={"name": "limits"})
    app_id = made["createApplication"]["application"]["id"]
    key = await org(CREATE_API_KEY, input={"applicationId": app_id, "name": "k", "role": "ADMIN"})
    admin = Caller(http, server.graphql, key["createApiKey"]["secret"])
    await admin(PURCHASE, input={"applicationId": app_id, "pool": "ai", "credits": 100})
    await admin(UPSERT, input={"applicationId": app_id, "endUsers": [{"externalId": "u0"}]})
    await create_endpoint(int(app_id), "https://93.184.215.14/hooks", [WebhookEventType.TEST])
    return admin, app_id


async def _timed(call: Awaitable[T]) -> tuple[T, float]:
    """The call's result and the CPU seconds spent on it; earlier tests' garbage collected
    first, so that a collection of the whole session's heap is not counted here."""
    gc.collect()
    started = time.process_time()
    response = await call
    return response, time.process_time() - started


def _messages(response: httpx.Response) -> list[str]:
    return [error["message"] for error in response.json().get("errors", [])]


async def test_a_depth_50_query_is_refused_fast(app) -> None:
    admin, _ = app
    query = "{ viewer { application " + "{ pools " * 48 + "{ key }" + " }" * 48 + " } }"
    response, elapsed = await _timed(admin.raw(query))
    assert elapsed < FAST
    body = response.json()
    assert body.get("data") is None
    assert any(f"exceeds maximum operation depth of {MAX_DEPTH}" in m for m in _messages(response))


async def test_the_deepest_real_query_is_within_the_depth_limit(app) -> None:
    """MAX_DEPTH leaves room for every real nesting of the schema."""
    admin, app_id = app
    query = """query($id: ID!) { application(id: $id) { alerts { edges { node {
        endUser { balances { pool } } } } } } }"""
    assert (await admin(query, id=app_id))["application"]["alerts"]["edges"] == []


async def test_a_1000_alias_query_is_refused_fast(app) -> None:
    admin, _ = app
    query = "{ " + " ".join(f"a{i}: __typename" for i in range(1_000)) + " }"
    response, elapsed = await _timed(admin.raw(query))
    assert elapsed < FAST
    assert response.json().get("data") is None
    assert _messages(response) == [f"1000 aliases found. Allowed: {MAX_ALIASES}"]


async def test_too_many_tokens_are_refused_fast(app) -> None:
    admin, _ = app
    query = "{ viewer { " + "role " * 6_000 + "} }"
    response, elapsed = await _timed(admin.raw(query))
    assert elapsed < FAST
    assert any("token" in m.lower() for m in _messages(response)), _messages(response)


def _refused_as_too_large(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 413, response.text
    assert elapsed < FAST
    errors = response.json()["errors"]
    assert errors[0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "request body larger than" in errors[0]["message"]


async def test_a_10_mb_body_gets_413_fast(server, app) -> None:
    admin, _ = app
    body = b'{"query": "{ viewer { role } }", "pad": "' + b"x" * 10_000_000 + b'"}'
    headers = {"Authorization": f"Bearer {admin.key}", "Content-Type": "application/json"}
    # A fresh client: the server closes the connection after refusing.
    async with httpx.AsyncClient(timeout=30) as client:
        response, elapsed = await _timed(client.post(server.graphql, content=body, headers=headers))
    _refused_as_too_large(response, elapsed)


async def test_a_streamed_body_without_length_is_refused_once_past_the_limit(backend) -> None:
    """Chunked (no Content-Length), at the ASGI level to see every message: 413 as soon as
    the bytes received pass the limit; the rest of the body is never asked for."""
    from api.app import create_app

    app = create_app(backend.settings, migrate=False)
    limit = backend.settings.max_body_bytes
    chunk = b"x" * 65_536
    asked = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    _, spent = await _timed(app(scope, receive, send))
    assert spent < FAST
    assert asked == limit // len(chunk) + 1  # stopped at the first chunk past the limit
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_a_streamed_body_over_http_is_not_read_to_its_end(server, app) -> None:
    """The same over a socket: the server stops reading (and closes) long before the
    client has sent 64 MB; the client sees the 413 or the closed connection."""
    admin, _ = app
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"query": "{ viewer { role } }", "pad": "'
        for _ in range(1_000):
            sent += 65_536
            yield b"x" * 65_536

    headers = {"Authorization": f"Bearer {admin.key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as client:
        try:
            response = await client.post(server.graphql, content=chunks(), headers=headers)
            assert response.status_code == 413
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            pass  # closed while the client was still sending
    assert sent < 16_000_000


async def test_a_body_under_the_limit_is_served(app) -> None:
    admin, _ = app
    response = await admin.raw("{ viewer { role } }", {"pad": "x" * 900_000})
    assert response.status_code == 200
    assert response.json()["data"]["viewer"]["role"] == "ADMIN"


def _connection_fields() -> list[tuple[list[tuple[str, str]], Any]]:
    found = fields_with_argument("first")
    assert found, "no field takes `first`: the schema changed, so must this test"
    return found


@pytest.mark.parametrize(
    "path",
    [p for p, _ in _connection_fields()],
    ids=[".".join(p[-1]) for p, _ in _connection_fields()],
)
async def test_first_is_capped_at_500_on_every_field(app, path) -> None:
    """Every field with a `first` argument, found in the schema: 1 is served; 501 (past the
    cap; a field may have a lower one) and -1 are typed VALIDATION errors."""
    admin, app_id = app
    u0 = await EndUser.get(application_id=int(app_id), external_id="u0")
    key_prefix = (admin.key or "ug_none_").split("_")[1]  # ug_<key id>_<secret>
    objects = {
        "application": app_id,
        "pool": "ai",
        "external_id": "u0",
        "end_user": str(u0.id),
        "key_prefix": key_prefix,
    }
    outcomes = {}
    for first in (1, MAX_FIRST + 1, -1):
        operation = next(operations("query", path, objects, {"first": first}))
        response = await admin.raw(operation.document, operation.variables)
        assert response.status_code == 200, response.text
        body = response.json()
        outcomes[first] = [(e.get("extensions") or {}).get("code") for e in body.get("errors", [])]
    assert outcomes == {1: [], MAX_FIRST + 1: ["VALIDATION"], -1: ["VALIDATION"]}


UPSERT_ALL = """
mutation($input: UpsertEndUsersInput!) {
  upsertEndUsers(input: $input) { endUsers { id } errors { code message field } }
}"""
CONSUME_BATCH = """
mutation($input: ConsumeCreditsBatchInput!) {
  consumeCreditsBatch(input: $input) { results { errors { code } } errors { code message } }
}"""


async def test_list_inputs_are_capped_at_1000(app) -> None:
    """upsertEndUsers and consumeCreditsBatch take up to 1,000 items: one more is a
    VALIDATION error that changes nothing."""
    admin, app_id = app
    before = await application_rows(int(app_id))
    users = [{"externalId": f"cap-{i}"} for i in range(MAX_LIST_INPUT + 1)]
    upserted = await admin(UPSERT_ALL, input={"applicationId": app_id, "endUsers": users})
    assert [e["code"] for e in upserted["upsertEndUsers"]["errors"]] == ["VALIDATION"]
    assert upserted["upsertEndUsers"]["endUsers"] is None
    consumption = {"endUser": {"externalId": "u0"}, "pool": "ai", "credits": 1, "feature": "f"}
    batch = [consumption] * (MAX_LIST_INPUT + 1)
    consumed = await admin(CONSUME_BATCH, input={"applicationId": app_id, "consumptions": batch})
    assert [e["code"] for e in consumed["consumeCreditsBatch"]["errors"]] == ["VALIDATION"]
    assert consumed["consumeCreditsBatch"]["results"] == []
    assert await application_rows(int(app_id)) == before
    assert await verify_ledger() == []
    served = await admin(UPSERT_ALL, input={"applicationId": app_id, "endUsers": users[:-1]})
    assert len(served["upsertEndUsers"]["endUsers"]) == MAX_LIST_INPUT


async def test_introspection_stays_on(server, http: httpx.AsyncClient, app) -> None:
    """The full introspection query GraphiQL and code generators send works, with a key
    and without one, and describes the schema the server runs."""
    admin, _ = app
    query = graphql.get_introspection_query(descriptions=True)
    for key in (admin.key, None):
        response = await Caller(http, server.graphql, key).raw(query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        served = graphql.build_client_schema(body["data"])
        assert {"viewer", "application"} <= set(served.query_type.fields)
        assert "consumeCredits" in served.mutation_type.fields
