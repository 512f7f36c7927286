"""The webhook deliverer of one process (docs/webhooks.md#delivery): claims due messages
(models/webhook_queue.py), posts them signed, and records each attempt, in the delivery log
and in the request log as an outgoing call. Every process runs one; the queue's leases make
that safe, and a killed process's messages are sent by the others once their leases end.

At most `webhook_concurrency` deliveries are in flight per process, and one per endpoint
(the queue hands out only an endpoint's oldest pending message). Finished attempts are
recorded together, between claims, in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from api.settings import Settings
from models.references import organization_of
from models.request_log import LogRow, LogSource, clip, outcome_for
from models.webhook_events import message_hooks
from models.webhook_queue import Attempt, Claimed, RetryPolicy, claim_due, record_attempts
from models.webhook_signing import UnsafeTarget, check_target, signature_header

log = logging.getLogger("usagegraph.webhooks")

USER_AGENT = "usagegraph-webhooks/1"
RESPONSE_BYTES_READ = 65_536  # of an answer's body, read to keep the connection; the rest is not
LEASE_MARGIN_SECONDS = 5.0


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
        # A claimed message is someone else's again after this (its holder died mid-send).
        self.lease = timedelta(seconds=settings.webhook_timeout_seconds * 2 + LEASE_MARGIN_SECONDS)
        self.client: httpx.AsyncClient | None = None
        self.task: asyncio.Task[None] | None = None
        self.sending: set[asyncio.Task[None]] = set()
        self.finished: list[Attempt] = []
        self.wakeup = asyncio.Event()
        self.delivered = 0
        self.failed_attempts = 0

    async def start(self) -> None:
        concurrency = self.settings.webhook_concurrency
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.settings.webhook_timeout_seconds),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            follow_redirects=False,  # a redirect could lead anywhere, a private address too
            trust_env=False,
        )
        message_hooks.append(self.wakeup.set)
        self.task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def close(self) -> None:
        """Stops claiming, lets the deliveries in flight end (they are bounded by the
        timeout) and records them."""
        with contextlib.suppress(ValueError):
            message_hooks.remove(self.wakeup.set)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.sending:
            await asyncio.wait(self.sending, timeout=self.settings.webhook_timeout_seconds + 1)
        with contextlib.suppress(Exception):
            await self._record()  # what is not recorded is sent again once its lease ends
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def _run(self) -> None:
        backoff = 0.1
        poll = self.settings.webhook_poll_seconds
        while True:
            try:
                self.wakeup.clear()
                await self._record()
                free = self.settings.webhook_concurrency - len(self.sending)
                claimed = await claim_due(free, self.lease) if free > 0 else []
                for message in claimed:
                    task = asyncio.create_task(self._deliver(message))
                    self.sending.add(task)
                    task.add_done_callback(self.sending.discard)
                backoff = 0.1
                if not claimed or len(claimed) == free:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wakeup.wait(), poll)
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
        try:
            disabled = await record_attempts(attempts, self.policy, self.disable_after)
        except BaseException:
            self.finished = attempts + self.finished  # recorded at the next turn
            raise
        for endpoint in disabled:
            log.warning(
                "webhook endpoint %s of application %s (%s) disabled: its deliveries have"
                " failed since %s",
                endpoint.id,
                endpoint.application_id,
                endpoint.url,
                endpoint.failing_since.isoformat(),
            )

    async def _deliver(self, message: Claimed) -> None:
        attempt = await self.attempt(message)
        if attempt.delivered:
            self.delivered += 1
        else:
            self.failed_attempts += 1
        self.finished.append(attempt)
        self.wakeup.set()
        if self.request_log is not None:
            await self._log(attempt)

    async def attempt(self, message: Claimed) -> Attempt:
        """One POST of the message, signed now; never raises for the receiver's doing."""
        assert self.client is not None
        body = message.payload.encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                message.signing_secrets, message.message_id, timestamp, body
            ),
        }
        started = time.perf_counter()
        status = None
        error = None
        try:
            # Checked again at each delivery: what the host resolves to may have changed.
            await check_target(message.url, self.settings.webhooks_allow_private)
            async with self.client.stream(
                "POST", message.url, content=body, headers=headers
            ) as response:
                status = response.status_code
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= RESPONSE_BYTES_READ:
                        break
            if not 200 <= status < 300:
                error = f"the receiver answered HTTP {status}"
        except UnsafeTarget as refused:
            error = refused.message
        except httpx.TimeoutException:
            error = f"no answer within {self.settings.webhook_timeout_seconds:g} s"
        except httpx.HTTPError as failure:
            error = (
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
