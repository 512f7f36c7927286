"""A malformed credential, of any length or alphabet, is refused as a credential: 401 on
every HTTP entry point that authenticates (GraphQL, export, request-log ingest), 4403 on a
WebSocket (both protocols), never a 5xx, and the request log counts it an AUTH_ERROR.
Through the real server, on both backends."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as connect_sync

from models.request_log import RequestLogEntry
from tests.subscribing import LEGACY_WS, TRANSPORT_WS


def _jwt(secret: str, **claims: object) -> str:
    exp = datetime.now(UTC) + timedelta(hours=1)
    body = {"sub": "1", "app": 1, "typ": "end_user", "exp": exp, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


OTHER_SECRET = "not-the-server-secret-but-32-bytes-long!"
# Credentials (what follows `Bearer `) that are no key or token of ours.
MALFORMED = [
    "ug_" + "a" * 33 + "_x",  # a key id longer than its column
    "ug_" + "0" * 200 + "_" + "s" * 43,
    "ug_" + "f" * 5_000 + "_x",  # longer than any credential
    "ug_abcdef012345_" + "s" * 3_000,  # a huge secret
    "ug_abcdef012345_" + "s" * 9_000,
    "ug_ключ_секрет",  # non-ASCII
    "ug_abcdé_secret",
    "ug_abc_sécret",
    "ug_\U0001f511_\U0001f511",
    "ug__secret",  # empty parts
    "ug_abc_",
    "ug_",
    "ug__",
    "ug___",
    "ug",
    "_ug_abc_secret",
    "UG_abc_secret",
    "ug_a.b_secret",
    "ug_abc_sec ret",
    "ug-abc-secret",
    "ugt_",  # End User token junk
    "ugt_junk",
    "ugt_a.b.c",
    "ugt_...",
    "ugt_" + "e" * 3_000,
    "ugt_ü.ü.ü",
    "ugt_" + _jwt(OTHER_SECRET),  # signed with another secret
    "ugt_" + _jwt(OTHER_SECRET, exp=datetime.now(UTC) - timedelta(hours=1)),
    "ugt_" + jwt.encode({"sub": "1", "app": 1, "typ": "end_user"}, None, algorithm="none"),
    "x" * 4_100,
    "not-a-key",
]
# Whole Authorization headers: a credential above, or no credential, or another scheme.
HEADERS = [
    *(f"Bearer {credential}" for credential in MALFORMED),
    "",
    "Bearer",
    "bearer",
    "Basic dXNlcjpwYXNzd29yZA==",
    "Token ug_abcdef012345_secret",
    "ug_abcdef012345_secret",
    "Bearer ug_abc_secret trailing words",
]
# connection_init payloads: the headers above, and what only JSON can carry.
WS_PAYLOADS: list[dict[str, object]] = [
    *({"authorization": header} for header in HEADERS),
    {"authorization": "Bearer ug_abc\x00_secret"},
    {"authorization": "Bearer ug_abc_secret\x00"},
    {"authorization": "Bearer ugt_\x00"},
    {"authorization": "Bearer \x00"},
    {"authorization": "Bearer    "},
    {"authorization": "Bearer ug_abc_se\ncret"},
    {"authorization": 12},
    {"authorization": ["Bearer", "ug_abc_secret"]},
    {"authorization": {"Bearer": "ug_abc_secret"}},
    {"Authorization": None},
    {},
]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


def _header_bytes(header: str) -> bytes:
    return header.encode("utf-8")  # as a client sends non-ASCII: raw UTF-8 bytes


async def _outcomes(server, request_ids: list[str]) -> dict[str, tuple[str, int, str | None]]:
    await server.request_log.flush()
    rows = await RequestLogEntry.filter(request_id__in=request_ids).values_list(
        "request_id", "outcome", "status", "error_code"
    )
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


async def test_a_malformed_credential_is_401_on_every_http_entry_point(server, http) -> None:
    tag = uuid.uuid4().hex[:8]
    endpoints = {
        "graphql": ("POST", server.graphql, {"json": {"query": "{ viewer { role } }"}}),
        "export": (
            "GET",
            f"{server.url}/v1/applications/1/export",
            {"params": {"type": "consumption", "from": "2026-01-01", "to": "2026-02-01"}},
        ),
        "ingest": ("POST", f"{server.url}/v1/request-logs", {"json": {"records": []}}),
    }
    request_ids = []
    for index, header in enumerate(HEADERS):
        for name, (method, url, extra) in endpoints.items():
            request_id = f"{tag}-{index}-{name}"
            request_ids.append(request_id)
            headers = {"Authorization": _header_bytes(header), "X-Request-Id": request_id}
            response = await http.request(method, url, headers=headers, **extra)  # type: ignore[arg-type]
            assert response.status_code == 401, (name, header[:80], response.text[:300])
            body = response.json()
            code = (
                body["errors"][0]["extensions"]["code"]
                if name == "graphql"
                else (body.get("error") or body["errors"][0])["code"]
            )
            assert code == "UNAUTHENTICATED", (name, header[:80], body)
    logged = await _outcomes(server, request_ids)
    assert set(logged) == set(request_ids)
    for request_id, (outcome, status, error_code) in logged.items():
        assert (outcome, status, error_code) == ("AUTH_ERROR", 401, "UNAUTHENTICATED"), request_id


async def test_a_nul_in_the_authorization_header_is_no_server_error(server) -> None:
    """A NUL cannot be sent through a well-behaved client: the raw request is refused by
    the HTTP layer or by the authentication, never with a 5xx."""
    host, port = server.url.removeprefix("http://").split(":")
    for credential in (b"ug_abc\x00_secret", b"ug_abc_secret\x00", b"ugt_\x00"):
        reader, writer = await asyncio.open_connection(host, int(port))
        body = b'{"query": "{ viewer { role } }"}'
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + credential + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        status = int(status_line.split()[1])
        assert status in (400, 401), (credential, status_line)


async def _ws_refusal(server, protocol: str, payload: dict, request_id: str) -> None:
    url = server.graphql.replace("http", "ws", 1)
    headers = {"X-Request-Id": request_id}
    async with connect(url, subprotocols=[protocol], additional_headers=headers) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        received = []
        with pytest.raises(ConnectionClosed) as caught:
            while True:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 4403, (protocol, payload, caught.value.rcvd)
    # legacy graphql-ws says why before it closes; graphql-transport-ws only closes
    expected = [] if protocol == TRANSPORT_WS else ["connection_error"]
    assert [message["type"] for message in received] == expected


async def test_a_malformed_credential_closes_a_websocket_with_4403(server) -> None:
    tag = uuid.uuid4().hex[:8]
    request_ids = []
    for protocol in (TRANSPORT_WS, LEGACY_WS):
        for index, payload in enumerate(WS_PAYLOADS):
            request_id = f"{tag}-{protocol}-{index}"
            request_ids.append(request_id)
            await _ws_refusal(server, protocol, payload, request_id)
    logged = await _outcomes(server, request_ids)
    assert set(logged) == set(request_ids)
    for request_id, (outcome, status, error_code) in logged.items():
        assert (outcome, status, error_code) == ("AUTH_ERROR", 403, "UNAUTHENTICATED"), request_id


# Credentials of any alphabet, and with our prefixes in front of anything.
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
_CREDENTIALS = st.one_of(
    _TEXT,
    st.builds(lambda key_id, secret: f"ug_{key_id}_{secret}", _TEXT, _TEXT),
    st.builds(lambda key_id: f"ug_{key_id}_x", st.text(min_size=33, max_size=200)),
    st.builds(lambda rest: f"ugt_{rest}", _TEXT),
)
_PRINTABLE = st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp"))


def _http_and_websocket_refuse(base_url: str) -> None:
    """Hypothesis in a thread of its own, with blocking clients: the server keeps serving
    on the test's event loop meanwhile."""
    ws_url = base_url.replace("http", "ws", 1) + "/graphql"
    # One client for every example (making one costs tens of milliseconds), each request
    # still on a connection of its own, as a lone client's would be
    fresh = httpx.Limits(max_keepalive_connections=0)

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(credential=_CREDENTIALS, printable=st.text(_PRINTABLE, max_size=300))
    def check(credential: str, printable: str) -> None:
        for header in (f"Bearer {credential}", f"Bearer ug_{printable}_{printable}"):
            if any(ord(c) < 32 or ord(c) == 127 for c in header):
                continue  # not sendable as an HTTP header: covered over the WebSocket
            header = header.strip(" \t")  # HTTP cannot carry it around a header value
            response = client.post(
                base_url + "/graphql",
                json={"query": "{ viewer { role } }"},
                headers={"Authorization": _header_bytes(header)},
            )
            assert response.status_code == 401, (header[:80], response.text[:300])
        with connect_sync(ws_url, subprotocols=[TRANSPORT_WS]) as ws:  # type: ignore[list-item]
            payload = {"authorization": f"Bearer {credential}"}
            ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            with pytest.raises(ConnectionClosed) as caught:
                ws.recv(timeout=5)
            assert caught.value.rcvd is not None and caught.value.rcvd.code == 4403

    with httpx.Client(limits=fresh, timeout=30) as client:
        check()


async def test_any_credential_text_is_refused_never_a_server_error(server) -> None:
    await asyncio.to_thread(_http_and_websocket_refuse, server.url)


@pytest.mark.parametrize("header", HEADERS)
def test_a_malformed_credential_gets_a_short_rate_limit_bucket(header: str) -> None:
    """The per-credential rate limit keeps up to 100,000 buckets: each one's key is short
    whatever the credential, or long key ids would fill the memory."""
    from api.rate_limit import limit_key

    scope = {"headers": [(b"authorization", _header_bytes(header))], "client": ("10.0.0.1", 1)}
    assert len(limit_key(scope)) <= 40
