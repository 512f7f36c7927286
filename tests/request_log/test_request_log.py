"""The request log through HTTP (docs/request-log.md): refused credentials, unknown paths and
GraphQL errors land in the owning application's log; ingest, filters, keyset pages, volume, the
live tail, retention."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from gql import gql

from models.accounts import create_application, create_organization
from models.end_user_tokens import sign_token
from models.request_log import (
    LogFilter,
    LogRow,
    Outcome,
    RequestLogEntry,
    delete_entries_before,
    entry_page,
    insert_entries,
)
from tests.applications import application
from tests.graphql_client import CONSUME, REVOKE_API_KEY, Caller
from tests.statement_counter import planned_once
from tests.subscribing import next_event, subscribed

LOG = """
query($app: ID!, $first: Int!, $after: String, $filter: RequestLogFilter) {
  application(id: $app) {
    requestLog(first: $first, after: $after, filter: $filter) {
      pageInfo { hasNextPage endCursor }
      edges { cursor node {
        id time method endpoint operationName endUserExternalId apiKeyPrefix status outcome
        errorCode errorMessage latencyMs requestId source endUser { id externalId }
      } }
    }
  }
}"""
VOLUME = """
query($app: ID!, $from: DateTime!, $to: DateTime!, $granularity: Granularity!) {
  application(id: $app) {
    requestVolume(from: $from, to: $to, granularity: $granularity) {
      granularity totalRequests totalErrors
      buckets { start requests ok clientErrors authErrors serverErrors errors spike }
    }
  }
}"""
CREATE_CODE = """
mutation($input: IssueEndUserTokenInput!) {
  createTemporaryCode(input: $input) { code errors { code } }
}"""
EXCHANGE = """
mutation($code: String!) { exchangeTemporaryCode(code: $code) { token errors { code message } } }"""
TAIL = gql(
    """
subscription($app: ID!, $filter: RequestLogFilter) {
  requestLogTail(applicationId: $app, filter: $filter) {
    endpoint status outcome errorCode requestId
  }
}"""
)


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


def _key_id(secret: str) -> str:
    return secret.split("_", 2)[1]


async def _entries(server, caller: Caller, app: str, **filter: Any) -> list[dict[str, Any]]:
    await server.request_log.flush()
    found = await caller(LOG, app=app, first=500, filter=filter or None)
    return [edge["node"] for edge in found["application"]["requestLog"]["edges"]]


def _by_request_id(entries: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    matching = [e for e in entries if e["requestId"] == request_id]
    assert len(matching) == 1, (request_id, entries)
    return matching[0]


async def test_refused_credentials_and_unknown_paths_land_in_the_owners_log(
    backend, server, http
) -> None:
    app = await application(server, http, users=1, credits_each=5)
    admin_key = app.admin.key
    key_id = _key_id(admin_key)
    tag = uuid.uuid4().hex[:8]

    async def post(request_id: str, key: str | None, body: dict[str, Any]) -> httpx.Response:
        headers = {"X-Request-Id": f"{tag}-{request_id}"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return await http.post(server.graphql, json=body, headers=headers)

    query = {
        "query": "query($id: ID!) { application(id: $id) { id } }",
        "variables": {"id": app.id},
    }
    wrong = await post("wrong", f"ug_{key_id}_not-the-secret", query)
    assert wrong.status_code == 401 and wrong.headers["x-request-id"] == f"{tag}-wrong"

    made = await app.organization(
        "mutation($input: CreateApiKeyInput!) {"
        " createApiKey(input: $input) { apiKey { id } secret } }",
        input={"applicationId": app.id, "name": "soon revoked", "role": "READ"},
    )
    revoked_secret = made["createApiKey"]["secret"]
    await app.organization(REVOKE_API_KEY, id=made["createApiKey"]["apiKey"]["id"])
    assert (await post("revoked", revoked_secret, query)).status_code == 401

    expired = sign_token(backend.settings.secret, int(app.id), int(app.end_user_ids[0]), -60).token
    assert (await post("expired", expired, query)).status_code == 401

    code = (
        await app.admin(
            CREATE_CODE, input={"applicationId": app.id, "endUser": {"id": app.end_user_ids[0]}}
        )
    )["createTemporaryCode"]["code"]
    exchange = {"query": EXCHANGE, "variables": {"code": code}}
    assert (await post("first-use", None, exchange)).json()["data"]["exchangeTemporaryCode"][
        "token"
    ]
    reused = (await post("reused", None, exchange)).json()["data"]["exchangeTemporaryCode"]
    assert reused["errors"][0]["code"] == "EXPIRED"

    unknown = await http.get(
        f"{server.url}/no/such/path",
        headers={"Authorization": f"Bearer {admin_key}", "X-Request-Id": f"{tag}-unknown"},
    )
    assert unknown.status_code == 404 and unknown.headers["x-request-id"] == f"{tag}-unknown"
    for insane in ("has a space", "x" * 65):
        echoed = await http.get(f"{server.url}/healthz", headers={"X-Request-Id": insane})
        assert len(echoed.headers["x-request-id"]) == 32  # ours instead

    entries = await _entries(server, app.organization, app.id)
    expected = {
        "wrong": ("AUTH_ERROR", "UNAUTHENTICATED", 401, key_id),
        "revoked": ("AUTH_ERROR", "API_KEY_REVOKED", 401, _key_id(revoked_secret)),
        "expired": ("AUTH_ERROR", "TOKEN_EXPIRED", 401, None),
        "reused": ("AUTH_ERROR", "EXPIRED", 200, None),
        "unknown": ("CLIENT_ERROR", "NOT_FOUND", 404, key_id),
        "first-use": ("OK", None, 200, None),
    }
    for name, (outcome, code, status, prefix) in expected.items():
        entry = _by_request_id(entries, f"{tag}-{name}")
        assert (entry["outcome"], entry["errorCode"], entry["status"]) == (outcome, code, status)
        assert entry["apiKeyPrefix"] == prefix
        assert entry["source"] == "api" and entry["latencyMs"] >= 0
    assert _by_request_id(entries, f"{tag}-unknown")["endpoint"] == "GET /no/such/path"
    assert _by_request_id(entries, f"{tag}-reused")["endpoint"] == (
        "POST /graphql exchangeTemporaryCode"
    )
    assert "expired" in _by_request_id(entries, f"{tag}-expired")["errorMessage"]


async def test_a_graphql_error_gives_endpoint_operation_end_user_and_code(server, http) -> None:
    app = await application(server, http, users=1, credits_each=5)
    response = await app.admin.client.post(
        server.graphql,
        json={
            "query": CONSUME.replace("mutation(", "mutation Spend("),
            "variables": {
                "input": {
                    "applicationId": app.id,
                    "endUser": {"externalId": "u0"},
                    "pool": "ai",
                    "credits": 50,
                    "feature": "ai_generation",
                }
            },
        },
        headers={"Authorization": f"Bearer {app.admin.key}", "X-Request-Id": "spend-1"},
    )
    assert response.json()["data"]["consumeCredits"]["errors"][0]["code"] == "INSUFFICIENT_CREDITS"
    bad = await app.admin.raw("query { application(id: 1) { nope } }")
    assert bad.status_code == 200 and bad.json()["errors"]
    entries = await _entries(server, app.organization, app.id)
    entry = _by_request_id(entries, "spend-1")
    assert entry["endpoint"] == "POST /graphql consumeCredits"
    assert entry["operationName"] == "Spend"
    assert (entry["outcome"], entry["errorCode"]) == ("CLIENT_ERROR", "INSUFFICIENT_CREDITS")
    assert entry["endUserExternalId"] == "u0"
    assert entry["endUser"] == {"id": app.end_user_ids[0], "externalId": "u0"}
    assert entry["apiKeyPrefix"] == _key_id(app.admin.key)
    invalid = [e for e in entries if e["errorCode"] == "GRAPHQL_INVALID"]
    assert invalid and invalid[0]["outcome"] == "CLIENT_ERROR"


async def test_a_refused_websocket_is_logged(backend, server, http) -> None:
    app = await application(server, http, users=1, credits_each=5)
    expired = sign_token(backend.settings.secret, int(app.id), int(app.end_user_ids[0]), -60).token
    with pytest.raises(Exception):  # noqa: B017 - the client's error type varies by protocol
        async with subscribed(server.graphql, expired, app=app.id, pool="ai") as events:
            await next_event(events)
    entries = await _entries(server, app.organization, app.id, endpoint="WS /graphql")
    assert entries and entries[0]["outcome"] == "AUTH_ERROR"
    assert entries[0]["errorCode"] == "TOKEN_EXPIRED"


def _record(index: int, **overrides: Any) -> dict[str, Any]:
    record = {
        "time": (datetime(2026, 1, 5, 10, tzinfo=UTC) + timedelta(minutes=index)).isoformat(),
        "method": "POST",
        "endpoint": "POST /editor/launch",
        "status": 200,
        "latencyMs": 12.5,
        "requestId": f"ingest-{index}",
    }
    record.update(overrides)
    return record


async def _ingest(http, server, key: str, records: Any) -> httpx.Response:
    return await http.post(
        f"{server.url}/v1/request-logs",
        json={"records": records},
        headers={"Authorization": f"Bearer {key}"},
    )


async def test_ingest_stores_good_records_and_names_each_bad_one(server, http) -> None:
    app = await application(server, http, users=1, credits_each=5)
    other = await application(server, http, users=1, credits_each=5)
    records = [
        _record(0),
        _record(1, status=99),
        _record(2, time="2026-01-05T10:00:00"),  # no time zone
        _record(3, surprise=True),
        "not an object",
        _record(5, applicationId=int(other.id)),
        _record(6, status=503, errorCode="UPSTREAM", errorMessage="renderer down"),
    ]
    answer = await _ingest(http, server, app.admin.key, records)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 2
    assert [(e["index"], e["code"]) for e in body["errors"]] == [
        (1, "VALIDATION"),
        (2, "VALIDATION"),
        (3, "VALIDATION"),
        (4, "VALIDATION"),
        (5, "NOT_FOUND"),
    ]
    assert body["errors"][0]["field"] == "status"
    stored = await _entries(server, app.organization, app.id, endpoint="POST /editor/launch")
    assert {(e["requestId"], e["outcome"], e["source"]) for e in stored} == {
        ("ingest-0", "OK", "ingest"),
        ("ingest-6", "SERVER_ERROR", "ingest"),
    }
    assert (
        await RequestLogEntry.filter(request_id="ingest-5", application_id=int(other.id)).count()
        == 0
    )

    # An organization key names the application; without it the record is refused.
    by_org = await _ingest(
        http, server, server.organization_key, [_record(7, applicationId=int(app.id)), _record(8)]
    )
    assert by_org.json()["accepted"] == 1
    assert by_org.json()["errors"][0]["field"] == "applicationId"
    # Whole-call refusals store nothing.
    too_many = await _ingest(http, server, app.admin.key, [_record(i) for i in range(1_001)])
    assert too_many.status_code == 400
    assert (await _ingest(http, server, app.reader.key, [_record(9)])).status_code == 403
    not_json = await http.post(
        f"{server.url}/v1/request-logs",
        content=b"{",
        headers={"Authorization": f"Bearer {app.admin.key}"},
    )
    assert not_json.status_code == 400
    assert (await _ingest(http, server, "ug_nope_nope", [_record(10)])).status_code == 401


async def test_filters_and_keyset_pages(server, http) -> None:
    app = await application(server, http, users=1, credits_each=5)
    records = []
    for i in range(60):
        status = (200, 404, 401, 500)[i % 4]
        records.append(
            _record(
                i,
                status=status,
                endpoint=f"POST /email/{'create' if i % 3 else 'send'}",
                apiKeyPrefix="svc-a" if i % 2 else "svc-b",
                endUserExternalId="u0" if i % 5 == 0 else None,
                endUserId=int(app.end_user_ids[0]) if i % 5 == 0 else None,
            )
        )
    assert (await _ingest(http, server, app.admin.key, records)).json()["accepted"] == 60
    await server.request_log.flush()

    seen: list[str] = []
    after = None
    while True:
        page = (
            await app.admin(
                LOG,
                app=app.id,
                first=7,
                after=after,
                filter={"from": "2026-01-05T00:00:00Z", "to": "2026-01-06T00:00:00Z"},
            )
        )["application"]["requestLog"]
        seen.extend(edge["node"]["requestId"] for edge in page["edges"])
        assert page["edges"][-1]["cursor"] == page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"ingest-{i}" for i in reversed(range(60))]
    # any edge's cursor continues right after that edge
    window = {"from": "2026-01-05T00:00:00Z", "to": "2026-01-06T00:00:00Z"}
    first = await app.admin(LOG, app=app.id, first=7, after=None, filter=window)
    third = first["application"]["requestLog"]["edges"][2]["cursor"]
    rest = await app.admin(LOG, app=app.id, first=3, after=third, filter=window)
    assert [e["node"]["requestId"] for e in rest["application"]["requestLog"]["edges"]] == seen[3:6]

    async def ids(**filter: Any) -> set[int]:
        found = await _entries(server, app.admin, app.id, **filter)
        ingested = [e for e in found if e["source"] == "ingest"]
        return {int(e["requestId"].split("-")[1]) for e in ingested}

    assert await ids(outcome="SERVER_ERROR") == {i for i in range(60) if i % 4 == 3}
    assert await ids(statusClass=4) == {i for i in range(60) if i % 4 in (1, 2)}
    assert await ids(statusClass=5) == {i for i in range(60) if i % 4 == 3}
    assert await ids(statusClass=2) == {i for i in range(60) if i % 4 == 0}
    assert await ids(statusClass=5, apiKeyPrefix="svc-a") == {i for i in range(60) if i % 4 == 3}
    assert await ids(endpoint="POST /email/send") == {i for i in range(60) if i % 3 == 0}
    assert await ids(apiKeyPrefix="svc-b", outcome="OK") == {i for i in range(60) if i % 4 == 0}
    assert await ids(endUser={"externalId": "u0"}) == {i for i in range(60) if i % 5 == 0}
    unknown = await app.admin.raw(
        LOG, {"app": app.id, "first": 5, "filter": {"endUser": {"externalId": "nobody"}}}
    )
    assert unknown.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    window = {"from": "2026-01-05T10:10:00Z", "to": "2026-01-05T10:20:00Z"}
    assert await ids(**window) == set(range(10, 20))

    refused = await app.admin.raw(LOG, {"app": app.id, "first": 501})
    assert refused.json()["errors"][0]["extensions"]["code"] == "VALIDATION"
    bad_cursor = await app.admin.raw(LOG, {"app": app.id, "first": 5, "after": "bm9wZQ=="})
    assert bad_cursor.json()["errors"][0]["extensions"]["code"] == "VALIDATION"
    # Another application's key sees none of it.
    other = await application(server, http, users=1, credits_each=5)
    hidden = await other.admin.raw(LOG, {"app": app.id, "first": 5})
    assert hidden.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_request_volume_buckets_and_spike(server, http) -> None:
    app = await application(server, http, users=1, credits_each=5)
    start = datetime(2026, 2, 2, 0, tzinfo=UTC)
    records = []
    for hour in range(8):
        count = 40 if hour == 6 else 4
        for n in range(count):
            at = start + timedelta(hours=hour, minutes=n)
            status = 500 if (hour == 6 and n < 10) else (401 if n == 0 else 200)
            records.append(_record(0, time=at.isoformat(), status=status, requestId=None))
    assert (await _ingest(http, server, app.admin.key, records)).json()["accepted"] == len(records)
    found = await app.admin(
        VOLUME,
        app=app.id,
        **{"from": start.isoformat(), "to": (start + timedelta(hours=10)).isoformat()},
        granularity="HOUR",
    )
    volume = found["application"]["requestVolume"]
    buckets = volume["buckets"]
    assert len(buckets) == 10 and volume["totalRequests"] == len(records)
    assert [b["requests"] for b in buckets] == [4, 4, 4, 4, 4, 4, 40, 4, 0, 0]
    assert buckets[6]["serverErrors"] == 10 and buckets[6]["authErrors"] == 0
    assert buckets[0]["authErrors"] == 1 and buckets[0]["errors"] == 1 and buckets[0]["ok"] == 3
    assert [b["spike"] for b in buckets] == [i == 6 for i in range(10)]
    daily = await app.admin(
        VOLUME,
        app=app.id,
        **{"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()},
        granularity="DAY",
    )
    assert [b["requests"] for b in daily["application"]["requestVolume"]["buckets"]] == [
        len(records)
    ]


async def test_the_tail_delivers_entries_written_after_subscribing(server, http) -> None:
    app = await application(server, http, users=1, credits_each=5)
    async with subscribed(
        server.graphql, app.admin.key, document=TAIL, app=app.id, filter={"statusClass": 4}
    ) as events:
        await asyncio.sleep(0.2)  # the subscription is registered
        await http.get(
            f"{server.url}/tail-probe",
            headers={"Authorization": f"Bearer {app.admin.key}", "X-Request-Id": "tail-1"},
        )
        await app.admin.raw("query($id: ID!) { application(id: $id) { id } }", {"id": app.id})
        entry = await next_event(events, wait=10)
    assert entry == {
        "endpoint": "GET /tail-probe",
        "status": 404,
        "outcome": "CLIENT_ERROR",
        "errorCode": "NOT_FOUND",
        "requestId": "tail-1",
    }


def _row(at: datetime, request_id: str) -> LogRow:
    return LogRow(
        None,
        None,
        at,
        "GET",
        "GET /x",
        None,
        None,
        None,
        None,
        200,
        "OK",
        None,
        None,
        1.0,
        request_id,
        "api",
    )


async def test_retention_deletes_old_rows_only(backend) -> None:
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    await insert_entries(
        [_row(now - timedelta(days=31, minutes=i), f"{tag}-old-{i}") for i in range(5)]
        + [_row(now - timedelta(days=29), f"{tag}-recent"), _row(now, f"{tag}-now")]
    )
    from api.jobs import request_log_retention
    from api.settings import Settings

    job = request_log_retention(Settings(DATABASE_URL=backend.settings.database_url))
    await asyncio.gather(job(), job())  # safe to run in two processes at once
    left = await RequestLogEntry.filter(request_id__startswith=tag).values_list(
        "request_id", flat=True
    )
    assert sorted(left) == [f"{tag}-now", f"{tag}-recent"]
    assert await delete_entries_before(now - timedelta(days=365)) >= 0


@pytest.mark.parametrize("returning", [True, False])
async def test_a_nul_character_in_a_logged_value_is_stored_replaced(backend, returning) -> None:
    """A path or operation name with NUL (PostgreSQL text refuses it) must not poison the
    batch it is written in."""
    tag = uuid.uuid4().hex[:8]
    bad = _row(datetime.now(UTC), f"{tag}-nul\x00")._replace(endpoint="GET /a\x00b")
    await insert_entries([bad, _row(datetime.now(UTC), f"{tag}-fine")], returning=returning)
    stored = await RequestLogEntry.filter(request_id__startswith=tag).order_by("request_id")
    assert [(e.request_id, e.endpoint) for e in stored] == [
        (f"{tag}-fine", "GET /x"),
        (f"{tag}-nul\ufffd", "GET /a\ufffdb"),
    ]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_row_the_database_refuses_is_dropped_alone_and_counted(backend) -> None:
    """One record PostgreSQL refuses (a status past smallint) must not block the log: after
    the batch kept failing, the writer stores the others and drops that one."""
    from api.request_log_writer import RequestLogWriter

    tag = uuid.uuid4().hex[:8]
    bad = _row(datetime.now(UTC), f"{tag}-bad")._replace(status=70_000)
    good = [_row(datetime.now(UTC), f"{tag}-good-{i}") for i in range(3)]
    writer = RequestLogWriter(secret="x" * 32)
    writer.unwritten = [good[0], bad, *good[1:]]
    with pytest.raises(Exception, match="out of int16 range"):
        await writer.flush()  # the batch as a whole is refused, and kept
    assert len(writer.unwritten) == 4
    assert await writer.set_aside_refused_rows() == 1
    stored = await RequestLogEntry.filter(request_id__startswith=tag).values_list(
        "request_id", flat=True
    )
    assert sorted(stored) == [f"{tag}-good-{i}" for i in range(3)]
    assert (writer.dropped, writer.written, writer.unwritten) == (1, 3, [])


async def test_closing_mid_flush_writes_every_queued_record_once(backend) -> None:
    """Shutting down while the flush task is enriching a batch (each draft's key looked up)
    must neither lose that batch nor write it twice."""
    from api.request_draft import RequestDraft
    from api.request_log_writer import RequestLogWriter

    tag = uuid.uuid4().hex[:8]
    writer = RequestLogWriter(secret="x" * 32, flush_seconds=0.001)
    for i in range(200):
        draft = RequestDraft(datetime.now(UTC), "POST", "/graphql", f"{tag}-{i}")
        draft.status = 200
        draft.api_key_prefix = f"{tag}{i:04d}"  # an unknown key: one lookup per draft
        writer.offer(draft)
    await writer.start()
    # The writer signals nothing when its task takes a batch: poll for the lock it holds.
    while not writer.flushing.locked():  # noqa: ASYNC110
        await asyncio.sleep(0)
    await asyncio.sleep(0.005)  # and is part-way through its lookups
    await writer.close()
    stored = await RequestLogEntry.filter(request_id__startswith=tag).values_list(
        "request_id", flat=True
    )
    assert sorted(stored) == sorted(f"{tag}-{i}" for i in range(200))
    assert (writer.written, writer.dropped) == (200, 0)


async def test_closing_right_after_a_wakeup_ends_the_flush_task(backend) -> None:
    """A close that meets the flush task's wakeup (its wait done, the cancellation due in the
    same turn) must still end it, whatever the event loop does with that cancellation."""
    from api.request_log_writer import RequestLogWriter

    for turns in range(4):  # the close lands 0-3 loop turns after the wakeup
        writer = RequestLogWriter(secret="x" * 32, flush_seconds=60)
        await writer.start()
        await asyncio.sleep(0)  # the task waits for its wakeup
        writer.wakeup.set()
        for _ in range(turns):
            await asyncio.sleep(0)
        closing = asyncio.create_task(writer.close())
        done, _ = await asyncio.wait({closing}, timeout=5)  # not a minute later, or never
        assert closing in done, turns


async def test_an_end_user_named_with_a_nul_is_logged_without_one(backend, tenant) -> None:
    """An operation naming an End User by an external id with NUL (refused before it ran)
    must not make the writer's look-up fail on PostgreSQL, which would hold its batch."""
    from api.request_draft import RequestDraft
    from api.request_log_writer import RequestLogWriter
    from resolvers.operation_summary import OperationSummary

    tag = uuid.uuid4().hex[:8]
    writer = RequestLogWriter(secret="x" * 32)
    draft = RequestDraft(datetime.now(UTC), "POST", "/graphql", tag)
    draft.status = 200
    draft.application_id = tenant.application_id
    draft.principal_known = True
    draft.operations.append(
        OperationSummary(None, ("consumeCredits",), end_user={"externalId": "a\x00b"})
    )
    writer.offer(draft)
    assert await writer.flush() == 1
    entry = await RequestLogEntry.get(request_id=tag)
    assert entry.end_user_id is None and entry.end_user_external_id == "a\ufffdb"


async def test_unfiltered_pages_are_planned_once(backend, monkeypatch) -> None:
    """An unfiltered page (the first, or one after a cursor) reads the same index whatever
    the application, so it is planned once; a filtered page keeps PostgreSQL's choice (the
    best index depends on how selective the filter is). Each answers the same entries."""
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "log pages")).id
    now = datetime.now(UTC)
    await insert_entries(
        [
            LogRow(
                app,
                organization.id,
                now - timedelta(seconds=i),
                "POST",
                "POST /graphql consumeCredits",
                None,
                None,
                None,
                None,
                (200, 400)[i % 2],
                ("OK", "CLIENT_ERROR")[i % 2],
                None,
                None,
                1.5,
                f"req-{i}",
                "api",
            )
            for i in range(7)
        ],
        returning=False,
    )
    planned = planned_once(monkeypatch)
    first = await entry_page(app, 3)
    assert [row["request_id"] for row in first] == ["req-0", "req-1", "req-2", "req-3"]
    after = (first[2]["time"], first[2]["id"])
    later = await entry_page(app, 3, after, as_json=(("requestId", "requestId"),))
    # (written as JSON by PostgreSQL, as rows by SQLite)
    ids = [
        orjson.loads(row["j"])["requestId"] if row.get("j") else row["request_id"] for row in later
    ]
    assert ids == [f"req-{i}" for i in range(3, 7)]
    unfiltered = len(planned)
    failed = await entry_page(app, 10, None, LogFilter(outcome=Outcome.CLIENT_ERROR))
    assert [row["request_id"] for row in failed] == ["req-1", "req-3", "req-5"]
    assert len(planned) == unfiltered
    if backend.postgres:
        assert unfiltered == 2 and all("request_log" in statement for statement in planned)
    else:
        assert planned == []  # SQLite has one connection and plans as it does
