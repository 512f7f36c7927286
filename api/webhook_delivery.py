"""The webhook deliverer of one process (docs/webhooks.md#delivery): claims due messages
(models/webhook_queue.py), posts them signed, and records each attempt, in the delivery log
and in the request log as an outgoing call. Every process runs one; the queue's leases make
that safe, and a killed process's messages are sent by the others once their leases end.

An endpoint's messages are claimed as a run (its head and up to RUN - 1 that follow) and
sent one after the other, each once the previous one was answered 2xx; a failure ends the
run (that message is retried later, the rest stay pending behind it). So one delivery per
endpoint is in flight, at most `webhook_concurrency` per process, and the database is
written once per run, not per message: finished runs are recorded together, between
claims, in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from api.settings import Settings
from models.references import organization_of
from models.request_log import LogRow, LogSource, clip, outcome_for
from models.webhook_events import message_hooks
from models.webhook_queue import Attempt, Claimed, RetryPolicy, claim_runs, record_attempts
from models.webhook_signing import UnsafeTarget, check_target, signature_header

if TYPE_CHECKING:
    from api.webhook_http import WebhookClient

log = logging.getLogger("usagegraph.webhooks")


USER_AGENT = "usagegraph-webhooks/1"
LEASE_MARGIN_SECONDS = 5.0
RUN = 50  # messages of one endpoint claimed at once


class WebhookDeliverer:
    def __init__(self, settings: Settings, request_log: Any = None) -> None:
        self.settings = settings
        self.request_log = request_log  # api.request_log_writer.RequestLogWriter, or None
        self.policy = RetryPolicy(
            first_delay=settings.webhook_retry_first_seconds,
            max_delay=settings.webhook_retry_max_seconds,
            attempts=settings.webhook_attempts,
        )
        self.disable_after = timedelta(seconds=settings.webhook_disable_after_seconds)
        # A claimed run is someone else's again after this (its holder died mid-send): time
        # for its messages one after the other (a failure ends it: at most one timeout).
        timeout = settings.webhook_timeout_seconds
        self.lease = timedelta(seconds=timeout * 2 + RUN * 0.2 + LEASE_MARGIN_SECONDS)
        self.client: WebhookClient | None = None  # made at the first delivery (`_client`)
        self.task: asyncio.Task[None] | None = None
        self.sending: set[asyncio.Task[None]] = set()
        self.finished: list[Attempt] = []
        self.released: list[int] = []  # held, not attempted (after a failure in their run)
        self.wakeup = asyncio.Event()
        # close() asks the loop to end by this flag too: Python 3.11's wait_for can lose a
        # cancellation that meets its wait's completion
        self.stopping = False
        self.delivered = 0  # attempts answered 2xx, by this process (for /metrics)
        self.failed_attempts = 0
        self.disabled = 0  # endpoints this process disabled

    async def start(self) -> None:
        self.stopping = False
        message_hooks.append(self.wakeup.set)
        self.task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def close(self) -> None:
        """Stops claiming, lets the deliveries in flight end (they are bounded by the
        timeout) and records them."""
        with contextlib.suppress(ValueError):
            message_hooks.remove(self.wakeup.set)
        if self.task is not None:
            self.stopping = True
            self.wakeup.set()
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.sending:  # each ends after its message in flight (see `stopping`)
            await asyncio.wait(self.sending, timeout=self.settings.webhook_timeout_seconds + 1)
            for task in list(self.sending):
                task.cancel()  # not recorded: sent again once its lease runs out
        with contextlib.suppress(Exception):
            await self._record()  # what is not recorded is sent again once its lease ends
        if self.client is not None:
            await self.client.close()

    def _client(self) -> WebhookClient:
        """Kept-alive connections, one per endpoint in flight (it has one delivery in flight
        at most), as many as `webhook_concurrency`. Made at the first delivery: aiohttp is
        loaded only then, so a process that sends no webhook never loads it (loaded, it
        grows the memory of every idle WebSocket connection by about a tenth,
        bench.ws_fanout)."""
        if self.client is None:
            from api.webhook_http import WebhookClient

            self.client = WebhookClient(
                self.settings.webhook_concurrency, self.settings.webhooks_allow_private
            )
        return self.client

    async def _run(self) -> None:
        backoff = 0.1
        poll = self.settings.webhook_poll_seconds
        while not self.stopping:
            try:
                self.wakeup.clear()
                await self._record()
                free = self.settings.webhook_concurrency - len(self.sending)
                claimed = await claim_runs(free, RUN, self.lease) if free > 0 else []
                for run in claimed:
                    task = asyncio.create_task(self._deliver(run))
                    self.sending.add(task)
                    task.add_done_callback(self.sending.discard)
                backoff = 0.1
                if (not claimed or len(claimed) == free) and not self.stopping:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(poll):
                            await self.wakeup.wait()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database away: the leases keep the messages
                log.warning("webhook delivery paused (%s); retrying in %.1fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _record(self) -> None:
        if not self.finished:
            return
        attempts, self.finished = self.finished, []
        released, self.released = self.released, []
        try:
            disabled = await record_attempts(attempts, self.policy, self.disable_after, released)
        except BaseException:
            self.finished = attempts + self.finished  # recorded at the next turn
            self.released = released + self.released
            raise
        self.disabled += len(disabled)
        for endpoint in disabled:
            log.warning(
                "webhook endpoint %s of application %s (%s) disabled: its deliveries have"
                " failed since %s",
                endpoint.id,
                endpoint.application_id,
                endpoint.url,
                endpoint.failing_since.isoformat(),
            )

    async def _deliver(self, run: list[Claimed]) -> None:
        """Sends a run in order, up to its first failure, while its lease surely holds."""
        attempts = []
        # the last send must end before the lease does (a slow receiver shortens the run)
        latest = time.monotonic() + self.lease.total_seconds() - LEASE_MARGIN_SECONDS
        latest -= self.settings.webhook_timeout_seconds
        for sent, message in enumerate(run):
            if sent and (self.stopping or time.monotonic() > latest):
                self.released += [m.id for m in run[sent:]]
                break
            attempt = await self.attempt(message, checked=sent > 0)
            attempts.append(attempt)
            if not attempt.delivered:
                self.released += [m.id for m in run[sent + 1 :]]
                break
        self.delivered += sum(a.delivered for a in attempts)
        self.failed_attempts += sum(not a.delivered for a in attempts)
        self.finished += attempts
        self.wakeup.set()
        if self.request_log is not None:
            for attempt in attempts:
                await self._log(attempt)

    async def attempt(self, message: Claimed, checked: bool = False) -> Attempt:
        """One POST of the message, signed now; never raises for the receiver's doing.
        `checked`: its URL was checked for this run already."""
        client = self._client()
        body = message.payload.encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": message.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                message.signing_secrets, message.message_id, timestamp, body
            ),
        }
        started = time.perf_counter()
        status = None
        error = None
        timeout = self.settings.webhook_timeout_seconds
        try:
            # Checked again at each run: what the host resolves to may have changed.
            if not checked:
                await check_target(message.url, self.settings.webhooks_allow_private)
            async with asyncio.timeout(timeout):
                status = await client.post(message.url, headers, body)
            if not 200 <= status < 300:
                error = f"the receiver answered HTTP {status}"
        except UnsafeTarget as refused:
            error = refused.message
        except TimeoutError:
            error = f"no answer within {timeout:g} s"
        except client.failures as failure:
            error = client.refusal(failure) or (
                f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
            )
        latency_ms = (time.perf_counter() - started) * 1000
        return Attempt(message, error is None, status, round(latency_ms, 3), error)

    async def _log(self, attempt: Attempt) -> None:
        message = attempt.message
        try:
            organization_id = await organization_of(message.application_id)
        except Exception:
            organization_id = None
        status = attempt.status or 0
        code = None
        if not attempt.delivered:
            code = "WEBHOOK_FAILED" if attempt.status is not None else "WEBHOOK_UNREACHABLE"
        self.request_log.offer_row(
            LogRow(
                application_id=message.application_id,
                organization_id=organization_id,
                time=datetime.now(UTC),
                method="POST",
                endpoint=clip(f"POST {message.url}", 300) or "POST",
                operation_name=message.event_type,
                end_user_id=None,
                end_user_external_id=None,
                api_key_prefix=None,
                status=status,
                outcome=outcome_for(attempt.status or 599, code).value,  # no answer: 5xx
                error_code=code,
                error_message=clip(attempt.error, 1_000),
                latency_ms=attempt.latency_ms,
                request_id=message.message_id,
                source=LogSource.WEBHOOK.value,
            )
        )
