"""The request volume (`models.request_log.request_volume`) counts exactly the requests
logged: on PostgreSQL it reads the hourly deltas that triggers on the log keep, through
batches inserted at once by several writers (COPY and INSERT), retention's deletes and
merges running among them; on SQLite it counts the log. Either way it must equal a count of
the log's rows."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from models.accounts import create_application, create_organization
from models.consumption import Granularity, bucket_range
from models.request_log import (
    LogRow,
    Outcome,
    RequestLogEntry,
    delete_entries_before,
    insert_entries,
    merge_request_volume,
    request_volume,
)
from models.sql import single_statement
from tests.conftest import Backend

OUTCOMES = list(Outcome)


def _row(app: int, at: datetime, outcome: Outcome, tag: str) -> LogRow:
    status = {Outcome.OK: 200, Outcome.CLIENT_ERROR: 400}.get(outcome, 500)
    return LogRow(
        *(app, None, at, "POST", "POST /graphql", None, None, None, None, status),
        *(outcome.value, None, None, 1.0, f"{tag}-{uuid.uuid4().hex[:8]}", "api"),
    )


async def _counted(app: int, since: datetime, until: datetime, granularity: Granularity) -> list:
    """The volume counted here from the log's rows, as `request_volume` answers it."""
    span = bucket_range(since, until, granularity)
    starts = list(span.starts())
    counts: Counter[tuple[datetime, Outcome]] = Counter()
    rows = await RequestLogEntry.filter(
        application_id=app, time__gte=span.start, time__lt=span.end
    ).values_list("time", "outcome")
    for at, outcome in rows:
        at = at.astimezone(UTC)
        start = max(s for s in starts if s <= at)
        counts[start, Outcome(outcome)] += 1
    return [
        (start, {o: counts[start, o] for o in OUTCOMES if counts[start, o]}) for start in starts
    ]


async def _check(app: int, now: datetime) -> None:
    for days, granularity in ((2, Granularity.HOUR), (10, Granularity.DAY)):
        since = now - timedelta(days=days)
        found = await request_volume(app, since, now, granularity)
        assert [(b.start, b.by_outcome) for b in found] == await _counted(
            app, since, now, granularity
        ), granularity


async def test_the_volume_counts_every_logged_request_through_writes_deletes_and_merges(
    backend: Backend,
) -> None:
    rng = random.Random(7)
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    apps = [(await create_application(organization.id, f"v{i}")).id for i in range(2)]
    now = datetime.now(UTC).replace(microsecond=0)
    tag = uuid.uuid4().hex[:6]

    def batch() -> list[LogRow]:
        return [
            _row(
                rng.choice(apps),
                now - timedelta(hours=rng.uniform(0, 24 * 9)),
                rng.choice(OUTCOMES),
                tag,
            )
            for _ in range(rng.randint(1, 40))
        ]

    for step in range(6):
        # several writers at once, by COPY and by INSERT, with merges among them
        writes = [insert_entries(batch(), returning=rng.random() < 0.5) for _ in range(4)]
        await asyncio.gather(*writes, merge_request_volume(), merge_request_volume())
        for app in apps:
            await _check(app, now)
        if step % 2:  # retention: whatever lies before a moment inside the range
            await delete_entries_before(now - timedelta(hours=rng.uniform(24 * 3, 24 * 8)))
            for app in apps:  # its deltas unmerged
                await _check(app, now)
        if rng.random() < 0.5:
            await merge_request_volume()
            for app in apps:
                await _check(app, now)
    await merge_request_volume()
    for app in apps:
        await _check(app, now)

    async def deltas(db) -> int:  # merged: a row per application, hour and outcome left
        if not db.postgres:
            return 0
        return int(
            await db.value(
                "SELECT COUNT(*) - COUNT(DISTINCT (application_id, hour, outcome))"
                " FROM request_volume WHERE application_id = ANY($1)",
                apps,
            )
        )

    assert await single_statement(deltas) == 0
