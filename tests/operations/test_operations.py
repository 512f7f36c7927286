"""Operations: health, readiness and metrics endpoints, the per-key rate limit, and the
request log under load: 10,000 requests then a clean shutdown lose no record."""

from __future__ import annotations

import asyncio
import socket
import uuid

import aiohttp
import httpx

from api.request_log_writer import BATCH
from models.request_log import RequestLogEntry
from tests.applications import application
from tests.demo_server import served
from tests.graphql_client import Caller


async def test_ten_thousand_requests_then_a_clean_shutdown_lose_no_record(backend) -> None:
    tag = uuid.uuid4().hex[:10]
    total = 10_000
    # No timed flush: only full batches are written while serving, the rest at shutdown.
    quiet = {"USAGEGRAPH_RATE_LIMIT_PER_SECOND": 0, "USAGEGRAPH_REQUEST_LOG_FLUSH_SECONDS": 3600}
    async with served(backend, **quiet) as (url, app):
        # aiohttp's client: about a fifth of httpx's CPU a request, in this process that
        # serves them too
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector) as client:
            sent = iter(range(total))

            async def worker() -> None:
                for n in sent:
                    headers = {"X-Request-Id": f"{tag}-{n}"}
                    if n % 10 == 0:
                        answer = client.post(
                            f"{url}/graphql", json={"query": "{ __typename }"}, headers=headers
                        )
                    else:
                        answer = client.get(f"{url}/missing/{n}", headers=headers)
                    async with answer as response:
                        await response.read()

            await asyncio.gather(*(worker() for _ in range(8)))
        writer = app.state.request_log
        # A flush woken by the last full batch drains the queue: wait until it has ended.
        for _ in range(600):
            idle = not writer.wakeup.is_set() and not writer.flushing.locked()
            if idle:
                break
            await asyncio.sleep(0.05)
        assert idle and len(writer.pending) < BATCH  # full batches are written while serving
        held_until_shutdown = len(writer.pending)
        await client_request(url, f"{tag}-last")  # one more, queued at shutdown for sure
        assert len(writer.pending) == held_until_shutdown + 1
    # The shutdown above flushed whatever was still queued.
    assert writer.dropped == 0 and not writer.pending
    stored = await RequestLogEntry.filter(request_id__startswith=f"{tag}-").count()
    assert stored == total + 1


async def client_request(url: str, request_id: str) -> None:
    async with httpx.AsyncClient() as client:
        await client.get(f"{url}/missing", headers={"X-Request-Id": request_id})


async def test_over_the_rate_limit_a_key_gets_429_with_retry_after(backend, server) -> None:
    async with served(
        backend, USAGEGRAPH_RATE_LIMIT_PER_SECOND=0.5, USAGEGRAPH_RATE_LIMIT_BURST=3
    ) as (url, app):
        async with httpx.AsyncClient(timeout=30) as http:
            # Set up through the unlimited server (same database): these keys are fresh here.
            tenant = await application(server, http, users=1, credits_each=1)
            caller = Caller(http, f"{url}/graphql", tenant.reader.key)
            query = "query($id: ID!) { application(id: $id) { id } }"
            answers = [await caller.raw(query, {"id": tenant.id}) for _ in range(4)]
            assert [a.status_code for a in answers[:3]] == [200, 200, 200]
            limited = answers[3]
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
            assert limited.headers["x-request-id"]
            # Probes are never limited; other keys have their own bucket.
            for _ in range(5):
                assert (await http.get(f"{url}/healthz")).status_code == 200
            other = Caller(http, f"{url}/graphql", tenant.admin.key)
            assert (await other.raw(query, {"id": tenant.id})).status_code == 200
            request_id = limited.headers["x-request-id"]
        await app.state.request_log.flush()
    entry = await RequestLogEntry.get(request_id=request_id)
    assert (entry.status, entry.outcome, entry.error_code) == (429, "CLIENT_ERROR", "RATE_LIMITED")
    assert entry.application_id == int(tenant.id)


async def test_health_readiness_and_metrics(backend, server) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{server.url}/healthz")).json() == {"status": "ok"}
        ready = await http.get(f"{server.url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        await http.get(f"{server.url}/missing-for-metrics")
        await server.request_log.flush()
        metrics = await http.get(f"{server.url}/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    for name in (
        'usagegraph_requests_total{outcome="CLIENT_ERROR"}',
        "usagegraph_request_latency_seconds_bucket",
        "usagegraph_websocket_subscribers",
        "usagegraph_outbox_lag_seconds",
        "usagegraph_request_log_dropped_total",
        'usagegraph_webhook_attempts_total{result="delivered"}',
        "usagegraph_webhook_endpoints_disabled_total",
    ):
        assert name in text, name


async def test_readiness_fails_while_the_broker_is_unreachable(backend) -> None:
    """503 with the failing check named, so a balancer stops sending traffic (a real Redis
    URL on a port where nothing listens)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with served(backend, REDIS_URL=f"redis://127.0.0.1:{closed_port}/0") as (url, _):
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.get(f"{url}/readyz")
            alive = await http.get(f"{url}/healthz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["broker"].startswith("unavailable")
    assert answer.json()["checks"]["database"] == "ok"
    assert alive.status_code == 200
