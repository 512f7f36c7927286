"""Background jobs: the runner keeps a job going through failures, and the expiry sweep runs
by itself in a server process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from api.jobs import JobRunner, PeriodicJob, default_jobs, sweep_expired_lots
from api.settings import Settings
from models.credits import CreditPack
from models.ledger import purchase_credits
from models.records import OutboxEvent
from models.verify import verify_ledger
from tests.ledger_helpers import move_expiry_to_past, pool_counters


async def test_a_failing_run_is_retried_at_the_next_tick() -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("first run fails")

    runner = JobRunner([PeriodicJob("flaky", 0.01, flaky)])
    await runner.start()
    for _ in range(200):
        if len(runs) >= 3:
            break
        await asyncio.sleep(0.01)
    await runner.close()
    assert len(runs) >= 3
    assert all(task.done() for task in runner.tasks) and runner.tasks == []


async def test_the_sweep_job_books_every_expired_lot_and_runs_safely_twice_at_once(
    tenant,
) -> None:
    app = tenant.application_id
    later = datetime.now(UTC) + timedelta(days=1)
    packs = [await purchase_credits(app, "ai", 10, expires_at=later) for _ in range(3)]
    for pack in packs:
        await move_expiry_to_past(pack.pack_id)

    first = JobRunner([PeriodicJob("expire-lots", 0.05, sweep_expired_lots)])
    second = JobRunner([PeriodicJob("expire-lots", 0.05, sweep_expired_lots)])
    await asyncio.gather(first.start(), second.start())
    try:
        for _ in range(400):
            if (await pool_counters(app)).expired == 30:
                break
            await asyncio.sleep(0.025)
    finally:
        await asyncio.gather(first.close(), second.close())
    pool = await pool_counters(app)
    assert (pool.expired, pool.remaining) == (30, 0)
    assert await verify_ledger() == []


async def test_the_expiry_warning_job_announces_each_lot_once_with_two_runners_at_once(
    tenant, outbox_held
) -> None:
    app = tenant.application_id
    soon = datetime.now(UTC) + timedelta(days=2)
    packs = {(await purchase_credits(app, "ai", 10, expires_at=soon)).pack_id for _ in range(40)}
    settings = Settings().model_copy(update={"expiry_warning_days": 7})
    [job] = [job for job in default_jobs(settings) if job.name == "warn-expiring-lots"]
    runners = [JobRunner([PeriodicJob(job.name, 0.05, job.run)]) for _ in range(2)]
    await asyncio.gather(*(runner.start() for runner in runners))
    warned = CreditPack.filter(id__in=packs, expiry_warned_at__isnull=False)
    try:
        for _ in range(400):
            if await warned.count() == len(packs):
                break
            await asyncio.sleep(0.025)
        await asyncio.sleep(0.2)  # both runners tick again: nothing more
    finally:
        await asyncio.gather(*(runner.close() for runner in runners))
    rows = await OutboxEvent.filter(application_id=app, topic="credits_expiring")
    assert sorted(row.payload["pack_id"] for row in rows) == sorted(packs)


async def test_idempotency_keys_are_forgotten_after_their_retention_never_before_30_days(
    tenant,
) -> None:
    from tortoise import connections

    from models.idempotency import forget_keys_before
    from models.records import IdempotencyRecord

    app = tenant.application_id
    for key in ("old", "recent", "fresh"):
        await purchase_credits(app, "ai", 5, idempotency_key=key)
    records = IdempotencyRecord.filter(application_id=app)
    ages = {"old": 40, "recent": 20, "fresh": 0}
    for key, days in ages.items():
        moment = datetime.now(UTC) - timedelta(days=days)
        await connections.get("default").execute_query(
            "UPDATE idempotency_record SET created_at = "
            + ("$1" if connections.get("default").capabilities.dialect == "postgres" else "?")
            + f" WHERE application_id = {int(app)} AND key = '{key}'",
            [moment],
        )

    # A cutoff asking for less than 30 days is held at 30: "recent" (20 days) stays.
    deleted = await forget_keys_before(datetime.now(UTC) - timedelta(days=1))
    assert deleted >= 1
    assert sorted(await records.values_list("key", flat=True)) == ["fresh", "recent"]
    replay = await purchase_credits(app, "ai", 5, idempotency_key="recent")
    assert replay.replayed


def test_the_fold_also_runs_just_after_each_hour_begins() -> None:
    """The burn window moves on the hour; reports read the moved hour from the ledger until a
    fold sums it, so the fold does not wait out its whole interval then."""
    fold = PeriodicJob("fold", 30.0, sweep_expired_lots, on_the_hour=True)
    plain = PeriodicJob("plain", 30.0, sweep_expired_lots)
    before_the_hour = datetime(2026, 11, 25, 21, 59, 55, tzinfo=UTC)
    assert 5.2 <= fold.delay(before_the_hour) <= 6.0
    assert 27.0 <= plain.delay(before_the_hour) <= 33.0
    mid_hour = datetime(2026, 11, 25, 22, 30, tzinfo=UTC)
    assert 27.0 <= fold.delay(mid_hour) <= 33.0
