"""Prometheus metrics of one process (`GET /metrics`): requests by outcome and their
latency (counted by the request log writer as it writes, so a request shows up within a
flush interval), WebSocket subscribers, the outbox relay's lag and the request log's dropped
records. One registry per app, so that several apps in one process (the tests) do not
share counters."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from models.outbox import oldest_pending_at
from models.request_log import LogRow, LogSource, Outcome, as_utc
from models.sql import single_statement

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Live(Collector):
    """Values read when scraped."""

    def __init__(
        self, subscribers: Callable[[], int], dropped: Callable[[], int], queued: Callable[[], int]
    ) -> None:
        self.subscribers = subscribers
        self.dropped = dropped
        self.queued = queued

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "usagegraph_websocket_subscribers",
            "Live subscriptions served by this process.",
            value=self.subscribers(),
        )
        yield CounterMetricFamily(
            "usagegraph_request_log_dropped",
            "Request log records dropped because the queue was full (or unwritable at exit).",
            value=self.dropped(),
        )
        yield GaugeMetricFamily(
            "usagegraph_request_log_queued",
            "Request log records waiting to be written.",
            value=self.queued(),
        )


class _Webhooks(Collector):
    def __init__(self, deliverer: Any) -> None:
        self.deliverer = deliverer

    def collect(self) -> Iterable[Metric]:
        attempts = CounterMetricFamily(
            "usagegraph_webhook_attempts",
            "Webhook delivery attempts made by this process, by result.",
            labels=["result"],
        )
        attempts.add_metric(["delivered"], self.deliverer.delivered)
        attempts.add_metric(["failed"], self.deliverer.failed_attempts)
        yield attempts
        yield CounterMetricFamily(
            "usagegraph_webhook_endpoints_disabled",
            "Webhook endpoints this process disabled after failing for too long.",
            value=self.deliverer.disabled,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "usagegraph_requests",
            "Requests answered, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "usagegraph_request_latency_seconds",
            "Time to answer a request (to acknowledge a WebSocket).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.outbox_lag = Gauge(
            "usagegraph_outbox_lag_seconds",
            "Age of the oldest unpublished outbox event (0 when none waits).",
            registry=self.registry,
        )
        self._by_outcome = {o.value: self.requests.labels(o.value) for o in Outcome}

    def watch(
        self, subscribers: Callable[[], int], dropped: Callable[[], int], queued: Callable[[], int]
    ) -> None:
        self.registry.register(_Live(subscribers, dropped, queued))

    def watch_webhooks(self, deliverer: Any) -> None:
        """The webhook deliverer's counts (api/webhook_delivery.py)."""
        self.registry.register(_Webhooks(deliverer))

    def observe_rows(self, rows: Sequence[LogRow]) -> None:
        """Counts the middleware's records of a written batch (not the ingested ones)."""
        observe = self.latency.observe
        for row in rows:
            if row.source == LogSource.API.value:
                self._by_outcome[row.outcome].inc()
                observe(row.latency_ms / 1000.0)

    async def render(self) -> bytes:
        oldest = await single_statement(oldest_pending_at)
        lag = 0.0 if oldest is None else (datetime.now(UTC) - as_utc(oldest)).total_seconds()
        self.outbox_lag.set(max(lag, 0.0))
        return generate_latest(self.registry)
