"""GET /v1/applications/{id}/export (docs/billing-and-export.md#export) over HTTP, on SQLite and
PostgreSQL: a range exports exactly the rows of that range in CSV and NDJSON, signed links work
until they are altered or expire, other applications are 404 and bad parameters a typed 400."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from models import exports
from models.billing import as_utc, month_start
from models.credits import CreditPack, CreditPool, EndUser
from models.export_links import sign_export
from models.exports import ExportFormat, ExportSpec, ExportType, iso_time
from models.records import LedgerEntry, UsageEvent
from models.request_log import LogSource, Outcome, RequestLogEntry
from models.sql import single_statement
from tests.graphql_client import REVOKE_API_KEY, Caller
from tests.usage_history import HttpApp, new_application, record_history

EXPORT_URL = """
query($id: ID!, $type: ExportType!, $from: DateTime!, $to: DateTime!, $format: ExportFormat!) {
  application(id: $id) { exportUrl(type: $type, from: $from, to: $to, format: $format) }
}"""
ISSUE_TOKEN = """
mutation($input: IssueEndUserTokenInput!) { issueEndUserToken(input: $input) { token } }"""
CREATE_KEY = """
mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { apiKey { id } secret } }"""
SETTINGS_SECRET = "usagegraph-development-secret-change-me-in-production"


@pytest.fixture
async def http() -> httpx.AsyncClient:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 2 rows, so every export resumes from a keyset or FETCHes many times."""
    monkeypatch.setattr(exports, "BATCH_ROWS", 2)


def _url(server: Any, app_id: object) -> str:
    return f"{server.url}/v1/applications/{app_id}/export"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _download(
    http: httpx.AsyncClient, server: Any, app: HttpApp, key: str | None = None, **params: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or app.admin_key}"}
    return await http.get(_url(server, app.id), params=params, headers=headers)


def _rows(response: httpx.Response, format: str) -> list[dict[str, Any]]:
    """The body parsed back: CSV through the csv module (every value text, '' for null),
    NDJSON one JSON object a line."""
    assert response.status_code == 200, response.text
    if format == "csv":
        return list(csv.DictReader(io.StringIO(response.text, newline="")))
    return [json.loads(line) for line in response.text.splitlines()]


def _as_csv(row: dict[str, Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, dict | list):
            return json.dumps(value, separators=(",", ":"))
        return str(value)

    return {k: text(v) for k, v in row.items()}


def _expect(rows: list[dict[str, Any]], format: str) -> list[dict[str, Any]]:
    return [_as_csv(r) for r in rows] if format == "csv" else rows


def _normalise_json(rows: list[dict[str, Any]], column: str, format: str) -> None:
    """JSON text may be spaced differently by the database: compare it parsed."""
    if format == "csv":
        for row in rows:
            if row[column]:
                row[column] = json.dumps(json.loads(row[column]), separators=(",", ":"))


async def _ledger_rows(application_id: int, start: datetime, end: datetime) -> list[dict]:
    pools = {p.id: p.key for p in await CreditPool.filter(application_id=application_id)}
    packages = {k.id: k.package for k in await CreditPack.filter(pool_id__in=list(pools))}
    users = {u.id: u.external_id for u in await EndUser.filter(application_id=application_id)}
    found = []
    for e in await LedgerEntry.filter(application_id=application_id).order_by("id"):
        if not start <= as_utc(e.created_at) < end:
            continue
        found.append(
            {
                "id": e.id,
                "created_at": iso_time(e.created_at),
                "occurred_at": iso_time(e.occurred_at),
                "kind": str(e.kind.value if hasattr(e.kind, "value") else e.kind),
                "pool": pools[e.pool_id],  # type: ignore[attr-defined]
                "lot_id": e.lot_id,  # type: ignore[attr-defined]
                "package": packages[e.lot_id],  # type: ignore[attr-defined]
                "end_user_id": e.end_user_id,  # type: ignore[attr-defined]
                "end_user_external_id": users.get(e.end_user_id),  # type: ignore[attr-defined]
                "amount": e.amount,
                "feature": e.feature,
                "idempotency_key": e.idempotency_key,
                "actor": e.actor,
                "usage_event_id": e.usage_event_id,
            }
        )
    return found


async def _consumption_rows(application_id: int, start: datetime, end: datetime) -> list[dict]:
    pools = {p.id: p.key for p in await CreditPool.filter(application_id=application_id)}
    users = {u.id: u.external_id for u in await EndUser.filter(application_id=application_id)}
    events = [
        e
        for e in await UsageEvent.filter(application_id=application_id)
        if start <= as_utc(e.occurred_at) < end
    ]
    events.sort(key=lambda e: (as_utc(e.occurred_at), e.id))
    return [
        {
            "id": e.id,
            "occurred_at": iso_time(e.occurred_at),
            "created_at": iso_time(e.created_at),
            "end_user_id": e.end_user_id,  # type: ignore[attr-defined]
            "end_user_external_id": users[e.end_user_id],  # type: ignore[attr-defined]
            "pool": pools[e.pool_id],  # type: ignore[attr-defined]
            "feature": e.feature,
            "credits": e.credits,
            "idempotency_key": e.idempotency_key,
            "metadata": e.metadata,
        }
        for e in events
    ]


@pytest.mark.parametrize("format", ["csv", "ndjson"])
async def test_a_range_exports_exactly_its_ledger_and_consumption_rows(
    server, http, small_batches, format
) -> None:
    app = await record_history(await new_application(server, http))
    entries = await LedgerEntry.filter(application_id=app.row_id).order_by("id")
    # A range that starts between two bookings and ends before the last ones.
    start = as_utc(entries[5].created_at) + timedelta(microseconds=1)
    end = as_utc(entries[-2].created_at)
    expected = await _ledger_rows(app.row_id, start, end)
    assert 0 < len(expected) < len(entries) - 5

    response = await _download(
        http,
        server,
        app,
        type="ledger",
        format=format,
        **{"from": _stamp(start), "to": _stamp(end)},
    )

    assert _rows(response, format) == _expect(expected, format)
    everything = await _download(
        http,
        server,
        app,
        type="ledger",
        format=format,
        **{"from": "2000-01-01", "to": "2100-01-01"},
    )
    assert [int(r["id"]) for r in _rows(everything, format)] == [e.id for e in entries]

    # Consumption by occurredAt: the back-dated one and the three sharing one time.
    events = await UsageEvent.filter(application_id=app.row_id)
    times = sorted({as_utc(e.occurred_at) for e in events})
    start, end = times[1], times[-1]  # drops the back-dated one and the newest
    expected = await _consumption_rows(app.row_id, start, end)
    assert len(expected) == 4 and any(r["metadata"] for r in expected)
    response = await _download(
        http,
        server,
        app,
        type="consumption",
        format=format,
        **{"from": _stamp(start), "to": _stamp(end)},
    )
    got = _rows(response, format)
    _normalise_json(got, "metadata", format)
    assert got == _expect(expected, format)


@pytest.mark.parametrize("format", ["csv", "ndjson"])
async def test_allocations_request_log_and_billing_exports(
    server, http, small_batches, format
) -> None:
    app = await record_history(await new_application(server, http))
    far = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}

    # Allocations: one row per End User and pool, summed from the ledger.
    sums: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in await LedgerEntry.filter(application_id=app.row_id, end_user_id__not_isnull=True):
        figures = sums[(e.end_user_id, e.pool_id)]  # type: ignore[attr-defined]
        name = {"ALLOCATE": "allocated", "RELEASE": "released", "CONSUME": "used"}
        figures[name.get(e.kind, "expired")] += abs(e.amount)
        figures["remaining"] += e.amount
    pools = {p.id: p.key for p in await CreditPool.filter(application_id=app.row_id)}
    users = {u.id: u.external_id for u in await EndUser.filter(application_id=app.row_id)}
    expected = [
        {
            "end_user_id": user,
            "end_user_external_id": users[user],
            "pool": pools[pool],
            **{k: sums[(user, pool)][k] for k in ("allocated", "released", "used", "expired")},
            "remaining": sums[(user, pool)]["remaining"],
        }
        for user, pool in sorted(sums)
    ]
    response = await _download(http, server, app, type="allocations", format=format, **far)
    assert _rows(response, format) == _expect(expected, format)

    # Request log entries of this application only, in time order (in a past window: the
    # middleware logs this test's own requests now).
    now = datetime(2001, 2, 3, 4, 5, 6, 789, tzinfo=UTC)
    logged = [
        await RequestLogEntry.create(
            application_id=app.row_id if i != 2 else app.row_id + 10_000,
            time=now - timedelta(minutes=i),
            method="POST",
            endpoint="POST /graphql consumeCredits",
            operation_name=None if i % 2 else "Consume",
            status=200 if i else 401,
            outcome=Outcome.OK if i else Outcome.AUTH_ERROR,
            error_message=None if i else 'bad key, "really"',
            latency_ms=1.5 * i,
            request_id=uuid.uuid4().hex,
            source=LogSource.API,
        )
        for i in range(4)
    ]
    window = {"from": _stamp(now - timedelta(minutes=10)), "to": _stamp(now + timedelta(seconds=1))}
    response = await _download(http, server, app, type="request_log", format=format, **window)
    got = _rows(response, format)
    mine = sorted((e for e in logged if e.application_id == app.row_id), key=lambda e: e.time)
    assert [int(r["id"]) for r in got] == [e.id for e in mine]
    assert got[-1]["error_message"] == 'bad key, "really"' and got[-1]["outcome"] == "AUTH_ERROR"

    # Billing: one row per pool of the current period, as the GraphQL API shows it.
    start = month_start(datetime.now(UTC))
    response = await _download(http, server, app, type="billing", format=format, **far)
    got = _rows(response, format)
    assert [(r["period_start"], r["pool"], r["status"]) for r in got] == [
        (_stamp(start).replace("Z", ".000000Z"), "ai", "OPEN"),
        (_stamp(start).replace("Z", ".000000Z"), "inbox_preview", "OPEN"),
    ]
    ai = got[0]
    packages = json.loads(ai["packages"]) if format == "csv" else ai["packages"]
    assert [p["package"] for p in packages] == ["Growth", "Starter", None]
    assert str(ai["used"]) == "28" and str(ai["active_end_users"]) == "3"


async def test_headers_and_file_name(server, http) -> None:
    app = await new_application(server, http)
    params = {"type": "ledger", "from": "2026-01-01", "to": "2026-02-01T00:00:00Z"}
    response = await _download(http, server, app, **params)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="{app.name}-ledger-20260101T000000Z-20260201T000000Z.csv"'
    )
    assert response.text.startswith("id,created_at,occurred_at,kind,pool,lot_id,package")
    response = await _download(http, server, app, format="ndjson", **params)
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"].endswith('.ndjson"')
    assert response.text == ""


async def test_a_signed_link_downloads_without_a_key_until_altered_or_expired(server, http) -> None:
    app = await record_history(await new_application(server, http))
    variables = {
        "id": app.id,
        "type": "LEDGER",
        "from": "2000-01-01T00:00:00Z",
        "to": "2100-01-01T00:00:00Z",
        "format": "NDJSON",
    }
    link = (await app.reader(EXPORT_URL, **variables))["application"]["exportUrl"]
    assert link.startswith(f"{server.url}/v1/applications/{app.id}/export?")

    signed = await http.get(link)  # no Authorization header
    with_key = await _download(
        http,
        server,
        app,
        type="ledger",
        format="ndjson",
        **{"from": "2000-01-01", "to": "2100-01-01"},
    )
    assert signed.status_code == 200 and signed.text == with_key.text
    assert (
        len(signed.text.splitlines()) == await LedgerEntry.filter(application_id=app.row_id).count()
    )

    query = parse_qs(urlsplit(link).query)
    base = _url(server, app.id)

    def altered(**changes: str) -> str:
        params = {k: v[0] for k, v in query.items()} | changes
        return f"{base}?{urlencode(params)}"

    signature = query["signature"][0]
    tampered_signature = signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
    for url in (
        altered(to="2100-01-02T00:00:00Z"),
        altered(type="consumption"),
        altered(format="csv"),
        altered(signature=tampered_signature),
        altered(signature="not-a-jwt"),
        link.replace(f"/applications/{app.id}/", f"/applications/{int(app.id) + 1}/"),
    ):
        refused = await http.get(url)
        assert refused.status_code == 403, url
        assert refused.json()["error"]["code"] == "FORBIDDEN"

    spec = ExportSpec(
        app.row_id,
        ExportType.LEDGER,
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2100, 1, 1, tzinfo=UTC),
        ExportFormat.NDJSON,
    )
    expired = sign_export(SETTINGS_SECRET, spec, None, ttl=timedelta(seconds=-5))
    refused = await http.get(altered(signature=expired.signature))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "EXPIRED"
    forged = sign_export("another-secret-of-at-least-32-bytes!!", spec, None)
    assert (await http.get(altered(signature=forged.signature))).status_code == 403

    # A link dies with the key that made it.
    made = await app.organization(
        CREATE_KEY, input={"applicationId": app.id, "name": "temp", "role": "READ"}
    )
    temp = Caller(http, server.graphql, made["createApiKey"]["secret"])
    temp_link = (await temp(EXPORT_URL, **variables))["application"]["exportUrl"]
    assert (await http.get(temp_link)).status_code == 200
    await app.organization(REVOKE_API_KEY, id=made["createApiKey"]["apiKey"]["id"])
    assert (await http.get(temp_link)).status_code == 403


async def test_other_applications_are_not_found_and_credentials_are_required(server, http) -> None:
    mine = await record_history(await new_application(server, http))
    other = await new_application(server, http)
    params = {"type": "ledger", "from": "2000-01-01", "to": "2100-01-01"}

    assert (
        await _download(http, server, mine, key=server.organization_key, **params)
    ).status_code == 200
    for key, app_id in (
        (other.admin_key, mine.id),  # another application's key
        (mine.admin_key, "999999999"),  # no such application
        (mine.admin_key, "abc"),
    ):
        response = await http.get(
            _url(server, app_id), params=params, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"
    token = await mine.admin(
        ISSUE_TOKEN, input={"applicationId": mine.id, "endUser": {"id": mine.end_user_ids[0]}}
    )
    as_end_user = await _download(
        http, server, mine, key=token["issueEndUserToken"]["token"], **params
    )
    assert as_end_user.status_code == 404
    anonymous = await http.get(_url(server, mine.id), params=params)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "UNAUTHENTICATED"
    wrong = await _download(http, server, mine, key="ug_nope_nope", **params)
    assert wrong.status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"type": "invoices", "from": "2026-01-01", "to": "2026-02-01"}, "type"),
        ({"from": "2026-01-01", "to": "2026-02-01"}, "type"),
        ({"type": "ledger", "format": "xml", "from": "2026-01-01", "to": "2026-02-01"}, "format"),
        ({"type": "ledger", "to": "2026-02-01"}, "from"),
        ({"type": "ledger", "from": "2026-01-01"}, "to"),
        ({"type": "ledger", "from": "yesterday", "to": "2026-02-01"}, "from"),
        ({"type": "ledger", "from": "2026-01-01T00:00:00", "to": "2026-02-01"}, "from"),
        ({"type": "ledger", "from": "2026-02-01", "to": "2026-02-01"}, "from"),
        ({"type": "ledger", "from": "2026-03-01", "to": "2026-02-01"}, "from"),
    ],
)
async def test_bad_parameters_are_a_typed_400(server, http, params, field) -> None:
    app = await new_application(server, http)
    response = await _download(http, server, app, **params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "VALIDATION"
    assert response.json()["error"]["field"] == field


async def test_export_url_refuses_a_bad_range(server, http) -> None:
    app = await new_application(server, http)
    response = await app.reader.raw(
        EXPORT_URL,
        {
            "id": app.id,
            "type": "LEDGER",
            "from": "2026-02-01T00:00:00Z",
            "to": "2026-01-01T00:00:00Z",
            "format": "CSV",
        },
    )
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["VALIDATION"]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_client_that_hangs_up_mid_stream_frees_the_export(server, http) -> None:
    app = await new_application(server, http)

    async def many_rows(db: Any) -> None:  # far more than the socket buffers hold
        await db.run(
            "INSERT INTO request_log (application_id, time, method, endpoint, status, outcome,"
            " latency_ms, request_id, source) SELECT $1, now() - i * interval '1 ms', 'POST',"
            " 'POST /graphql consumeCredits', 200, 'OK', 1.0, md5(i::text), 'api'"
            " FROM generate_series(1, 100000) AS i",
            app.row_id,
        )

    await single_statement(many_rows)
    params = {"type": "request_log", "from": "2000-01-01", "to": "2100-01-01"}
    headers = {"Authorization": f"Bearer {app.admin_key}"}
    for _ in range(5):  # more than the concurrency limit (4) would allow if they leaked
        async with http.stream("GET", _url(server, app.id), params=params, headers=headers) as r:
            assert r.status_code == 200
            received = 0
            async for chunk in r.aiter_raw():
                received += len(chunk)
                if received > 1_000_000:
                    assert await _open_export_sessions() == 1
                    break  # hang up mid-stream
        for _ in range(100):
            if await _open_export_sessions() == 0:
                break
            await asyncio.sleep(0.05)
        assert await _open_export_sessions() == 0


async def _open_export_sessions() -> int:
    async def count(db: Any) -> int:
        return await db.value(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            exports.SESSION_NAME,
        )

    return await single_statement(count)


async def test_links_use_the_public_url_when_one_is_configured(server, http, backend) -> None:
    """Behind a proxy the service hands out links at its public address."""
    from api.app import create_app

    app = await new_application(server, http)
    settings = backend.settings.model_copy(update={"public_url": "https://usage.example.com/"})
    proxied = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, migrate=False)),
        base_url="http://internal:8000",
    )
    async with proxied:
        variables = {
            "id": app.id,
            "type": "LEDGER",
            "from": "2000-01-01T00:00:00Z",
            "to": "2100-01-01T00:00:00Z",
            "format": "CSV",
        }
        response = await proxied.post(
            "/graphql",
            json={"query": EXPORT_URL, "variables": variables},
            headers={"Authorization": f"Bearer {app.admin_key}"},
        )
    link = response.json()["data"]["application"]["exportUrl"]
    assert link.startswith(f"https://usage.example.com/v1/applications/{app.id}/export?")
