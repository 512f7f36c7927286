"""A series' `remaining` is the balance as the ledger stood at each bucket's end (booking
time), over HTTP on both backends: consumptions reported with an `occurredAt` before the
credits they drew from were bought or allocated never make it negative, `used` stays in
the bucket the consumption occurred in, and the last bucket is the live balance, before
and after the rollup fold."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from models.consumption import Granularity, bucket_floor
from models.rollups import fold_usage
from tests.applications import App, application, consume_input
from tests.graphql_client import CONSUME

SERIES = """
query($id: ID!, $from: DateTime!, $to: DateTime!, $granularity: Granularity!, $user: String) {
  application(id: $id) {
    pools { key remaining }
    consumption(from: $from, to: $to, granularity: $granularity, pool: "ai") {
      totalUsed buckets { start used remaining }
    }
    endUser(externalId: $user) {
      balance(pool: "ai") { remaining }
      consumption(from: $from, to: $to, granularity: $granularity, pool: "ai") {
        totalUsed buckets { start used remaining }
      }
    }
  }
}"""


WIDTH = {"DAY": timedelta(days=1), "HOUR": timedelta(hours=1)}


async def _series(app: App, granularity: str, days: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    found = await app.reader(
        SERIES,
        id=app.id,
        user="u0",
        granularity=granularity,
        **{
            "from": (now - timedelta(days=days)).isoformat(),
            "to": (now + timedelta(minutes=1)).isoformat(),
        },
    )
    return found["application"]


def _check(
    found: dict[str, Any], granularity: str, began: datetime, reports: list[tuple[datetime, int]]
) -> None:
    """Never negative; 0 at the end of every bucket before the history was booked (it was
    all booked after `began`); the live balance at the end of a bucket ending after now;
    `used` in the bucket each consumption occurred in."""
    live_pool = next(p["remaining"] for p in found["pools"] if p["key"] == "ai")
    user = found["endUser"]
    expected_used: dict[datetime, int] = defaultdict(int)
    for moment, credits in reports:
        expected_used[bucket_floor(moment, Granularity(granularity))] += credits
    now = datetime.now(UTC)
    for series, live in (
        (found["consumption"], live_pool),
        (user["consumption"], user["balance"]["remaining"]),
    ):
        buckets = series["buckets"]
        for bucket in buckets:
            start = datetime.fromisoformat(bucket["start"])
            end = start + WIDTH[granularity]
            assert bucket["remaining"] >= 0, buckets
            if end <= began:
                assert bucket["remaining"] == 0, bucket
            if end > now:
                assert bucket["remaining"] == live, bucket
            assert bucket["used"] == expected_used.get(start, 0), bucket
        assert buckets[-1]["remaining"] == live
        assert series["totalUsed"] == sum(credits for _, credits in reports)


async def test_back_dated_consumption_never_makes_remaining_negative(server, http) -> None:
    began = datetime.now(UTC)
    app = await application(server, http, users=1, credits_each=50)
    reports: list[tuple[datetime, int]] = []
    # u0 reports use from days ago, drawn from credits bought and allocated just now; a
    # fold between the reports leaves some in the rollups and some in the unfolded tail
    for hours_ago, credits in ((75, 7), (50, 5), (26, 3)):
        moment = datetime.now(UTC) - timedelta(hours=hours_ago)
        payload = await app.admin(
            CONSUME,
            input=consume_input(app, {"externalId": "u0"}, credits, occurredAt=moment.isoformat()),
        )
        assert payload["consumeCredits"]["errors"] == []
        reports.append((moment, credits))
        for granularity in ("DAY", "HOUR"):
            _check(await _series(app, granularity, 4), granularity, began, reports)
        await fold_usage()
    for granularity in ("DAY", "HOUR"):
        _check(await _series(app, granularity, 4), granularity, began, reports)
