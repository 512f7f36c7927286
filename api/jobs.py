"""Background jobs: every process runs all of them; each job is safe to run in every process
at once (it takes advisory locks, `SKIP LOCKED` rows or writes idempotently), so no process
is special and a dead one is simply replaced by the others."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from api.settings import Settings
from models.api_key_use import flush_key_use
from models.billing import close_ended_periods
from models.expiry import SWEEP_BATCH, expire_lots, warn_expiring_lots
from models.idempotency import forget_keys_before
from models.request_log import delete_entries_before, merge_request_volume
from models.rollups import fold_usage
from models.webhook_queue import delete_settled_before

log = logging.getLogger("usagegraph.jobs")

RETENTION_EVERY_SECONDS = 3600.0


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[object]]
    # also run just after each UTC hour begins (the fold: the burn window moves then, and
    # reports read the moved hour from the ledger until a fold sums it)
    on_the_hour: bool = False

    def delay(self, now: datetime) -> float:
        """Seconds until the next run: the interval (with jitter, so processes started
        together spread out), or less when an hour begins sooner."""
        delay = self.interval_seconds * random.uniform(0.9, 1.1)
        if self.on_the_hour:
            hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            delay = min(delay, (hour - now).total_seconds() + random.uniform(0.2, 1.0))
        return delay


async def sweep_expired_lots() -> None:
    """Books every expired lot's remainder, a batch at a time, until none is left."""
    while (await expire_lots()).lots == SWEEP_BATCH:
        pass


def expiry_warner(settings: Settings) -> Callable[[], Awaitable[int]]:
    """Announces, once each, the lots expiring within USAGEGRAPH_EXPIRY_WARNING_DAYS, a batch
    at a time, until none is left; the events written."""
    window = timedelta(days=settings.expiry_warning_days)

    async def warn() -> int:
        written = 0
        while count := await warn_expiring_lots(window):
            written += count
        return written

    return warn


def billing_closer(settings: Settings) -> Callable[[], Awaitable[int]]:
    """Closes every ended billing period of every application (exactly once in all)."""
    delay = timedelta(seconds=settings.billing_close_delay_seconds)
    return lambda: close_ended_periods(delay=delay)


def request_log_retention(settings: Settings) -> Callable[[], Awaitable[int]]:
    """Deletes request log entries older than USAGEGRAPH_REQUEST_LOG_RETENTION_DAYS."""
    kept = timedelta(days=settings.request_log_retention_days)
    return lambda: delete_entries_before(datetime.now(UTC) - kept)


def idempotency_retention(settings: Settings) -> Callable[[], Awaitable[int]]:
    """Deletes idempotency records older than USAGEGRAPH_IDEMPOTENCY_RETENTION_DAYS."""
    kept = timedelta(days=settings.idempotency_retention_days)
    return lambda: forget_keys_before(datetime.now(UTC) - kept)


def webhook_retention(settings: Settings) -> Callable[[], Awaitable[int]]:
    """Deletes settled webhook messages older than USAGEGRAPH_WEBHOOK_RETENTION_DAYS."""
    kept = timedelta(days=settings.webhook_retention_days)
    return lambda: delete_settled_before(datetime.now(UTC) - kept)


def default_jobs(settings: Settings) -> list[PeriodicJob]:
    """The jobs a server process runs. Other domains add theirs here."""
    return [
        PeriodicJob("expire-lots", settings.expiry_sweep_seconds, sweep_expired_lots),
        PeriodicJob("warn-expiring-lots", settings.expiry_sweep_seconds, expiry_warner(settings)),
        PeriodicJob("fold-usage", settings.rollup_fold_seconds, fold_usage, on_the_hour=True),
        PeriodicJob("merge-request-volume", settings.rollup_fold_seconds, merge_request_volume),
        PeriodicJob(
            "request-log-retention",
            settings.request_log_retention_seconds,
            request_log_retention(settings),
        ),
        PeriodicJob(
            "idempotency-retention",
            RETENTION_EVERY_SECONDS,
            idempotency_retention(settings),
        ),
        PeriodicJob(
            "close-billing-periods", settings.billing_close_seconds, billing_closer(settings)
        ),
        PeriodicJob("api-key-use", settings.api_key_use_flush_seconds, flush_key_use),
        PeriodicJob("webhook-retention", RETENTION_EVERY_SECONDS, webhook_retention(settings)),
    ]


class JobRunner:
    """One task per job: run, sleep (`PeriodicJob.delay`), repeat. A failing run is logged
    and retried at the next tick."""

    def __init__(self, jobs: Sequence[PeriodicJob]) -> None:
        self.jobs = list(jobs)
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._loop(job), name=f"job-{job.name}") for job in self.jobs
        ]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    async def _loop(self, job: PeriodicJob) -> None:
        await asyncio.sleep(random.uniform(0, min(job.interval_seconds, 5.0)))
        while True:
            try:
                await job.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s failed; retrying in %.0f s", job.name, job.interval_seconds)
            await asyncio.sleep(job.delay(datetime.now(UTC)))
