"""Background jobs: the runner keeps a job going through failures, and the expiry sweep runs
by itself in a server process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from api.jobs import JobRunner, PeriodicJob, sweep_expired_lots
from models.ledger import purchase_credits
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
