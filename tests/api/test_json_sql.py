"""The JSON values PostgreSQL writes for preserialized answers (models/json_sql.py) are
the text Python writes for the same values: timestamps by `isoformat`, and a time some
fraction of days ahead as `now + timedelta(days=...)` rounds it, on thousands of generated
cases (half microseconds, whole days, negative spans, the range's edges)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from models.json_sql import MAX_DAYS_AHEAD, iso_time, iso_time_after_days
from tests.conftest import PG_ADMIN_DSN, REQUIRE_SERVICES

CASES = 4_000


def _days(rng: random.Random, i: int) -> float:
    kind = i % 6
    if kind == 0:
        return rng.random() * 100
    if kind == 1:  # a remaining over a burn rate, as the balances divide them
        rate = rng.randrange(1, 5_000) / (7 + rng.random() / 24)
        return rng.randrange(0, 100_000) / rate
    if kind == 2:  # close to half a microsecond past a whole one
        return (rng.randrange(0, 10**12) + 0.5) / 86_400e6
    if kind == 3:
        return rng.uniform(-MAX_DAYS_AHEAD, MAX_DAYS_AHEAD) * 0.999
    if kind == 4:
        return float(rng.randrange(-1_000, 1_000))
    return -rng.random()


@pytest.fixture
async def postgres() -> AsyncIterator[asyncpg.Connection]:
    """Only PostgreSQL writes JSON (SQLite's answers take the Python writers)."""
    try:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if REQUIRE_SERVICES:
            raise
        pytest.skip(f"PostgreSQL is not reachable: {exc}")
    yield connection
    await connection.close()


async def test_times_ahead_round_as_python_timedelta_does(postgres: asyncpg.Connection) -> None:
    rng = random.Random(20261204)
    nows, days = [], []
    for i in range(CASES):
        micro = 0 if i % 7 == 0 else rng.randrange(10**6)
        nows.append(
            datetime(2026, 12, 4, 7, 0, 0, micro, tzinfo=UTC)
            + timedelta(seconds=rng.randrange(10**8))
        )
        days.append(_days(rng, i))
    rows = await postgres.fetch(
        f"SELECT {iso_time_after_days('c.now', 'c.days')} AS ahead, {iso_time('c.now')} AS at"
        " FROM unnest($1::timestamptz[], $2::float8[]) WITH ORDINALITY AS c(now, days, i)"
        " ORDER BY c.i",
        nows,
        days,
    )
    wrong = [
        (now, span, row["ahead"], (now + timedelta(days=span)).isoformat())
        for now, span, row in zip(nows, days, rows, strict=True)
        if row["ahead"] != (now + timedelta(days=span)).isoformat()
    ]
    assert not wrong, wrong[:5]
    assert [row["at"] for row in rows] == [now.isoformat() for now in nows]
