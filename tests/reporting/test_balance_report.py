"""The balance report (models/balance_report.py): the allocation summary and the rankings
read the fold's report rows for End Users unchanged since the fold and the live balances
for the others, and must answer exactly what the live balances and the ledger say, through
consumptions, allocations, releases and threshold changes after the fold, and a burn window
that moved since it."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from models.accounts import create_application, create_organization
from models.alerts import set_low_balance_threshold
from models.allocation_report import (
    HORIZON_DAYS,
    NEVER,
    Listing,
    OrderField,
    Ranking,
    StatusFilter,
    allocation_summary,
    end_user_page,
    ranked_end_users,
    rankings,
    summary_and_rankings,
    window_days,
)
from models.consumption import Granularity, SeriesKey, bucket_range, consumption_series
from models.end_users import EndUserInput, upsert_end_users
from models.ledger import allocate_credits, consume_credits, purchase_credits, release_credits
from models.references import EndUserRef
from models.rollups import fold_usage, refresh_balance_report, window_start
from models.sql import Sql, single_statement, transaction
from models.verify import verify_ledger
from tests.conftest import Backend
from tests.ledger_helpers import balance_changes
from tests.statement_counter import planned_once

USERS = 8
FIRST = 3  # rankings shorter than the End User count: report and live candidates merge


@dataclass(frozen=True)
class Expected:
    counts: dict[str, int]
    shortfall: float
    top: list[int]
    close: list[int]
    # every End User by projected exhaustion in the pool, with its window use
    by_exhaustion: list[tuple[int, int]]


async def _expected(app: int, pool_id: int, now: datetime) -> Expected:
    """Straight from the live balances and the ledger."""

    async def work(db: Sql) -> tuple[list[dict], list[dict], list[int]]:
        balances = await db.rows(
            "SELECT end_user_id, allocated, used, remaining, status FROM end_user_balance"
            " WHERE pool_id = $1",
            pool_id,
        )
        window = await db.rows(
            "SELECT end_user_id, -SUM(amount) AS used FROM ledger_entry WHERE pool_id = $1"
            " AND kind = 'CONSUME' AND occurred_at >= $2 GROUP BY end_user_id",
            pool_id,
            window_start(now),
        )
        ids = await db.rows("SELECT id FROM end_user WHERE application_id = $1", app)
        return balances, window, [row["id"] for row in ids]

    balances, window, end_users = await single_statement(work)
    total = len(end_users)
    used = {row["end_user_id"]: int(row["used"]) for row in window}
    horizon = HORIZON_DAYS / window_days(now)
    counts = {
        "end_users_total": int(total),
        "with_allocation": sum(b["allocated"] > 0 for b in balances),
        "with_credits": sum(b["remaining"] > 0 for b in balances),
        "low": sum(b["status"] == "LOW" for b in balances),
        "exhausted": sum(b["allocated"] > 0 and b["remaining"] == 0 for b in balances),
        "window_used": sum(used.values()),
    }
    shortfall = sum(
        max(0.0, used.get(b["end_user_id"], 0) * horizon - b["remaining"]) for b in balances
    )
    top = sorted(
        (b for b in balances if b["used"] > 0), key=lambda b: (-b["used"], b["end_user_id"])
    )
    close = sorted(
        (b for b in balances if b["remaining"] > 0 and used.get(b["end_user_id"], 0) > 0),
        key=lambda b: (b["remaining"] / used[b["end_user_id"]], b["end_user_id"]),
    )
    remaining = {b["end_user_id"]: b["remaining"] for b in balances}

    def exhaustion_key(end_user: int) -> tuple[float, int]:
        use = used.get(end_user, 0)
        return (remaining.get(end_user, 0) / use if use > 0 else NEVER, end_user)

    return Expected(
        counts,
        shortfall,
        [b["end_user_id"] for b in top[:FIRST]],
        [b["end_user_id"] for b in close[:FIRST]],
        [(u, used.get(u, 0)) for u in sorted(end_users, key=exhaustion_key)],
    )


async def _check(app: int, pool_id: int) -> None:
    now = datetime.now(UTC)
    expected = await _expected(app, pool_id, now)
    summary = await allocation_summary(app, pool_id, now)
    found = {name: getattr(summary, name) for name in expected.counts}
    assert found == expected.counts
    assert summary.shortfall == pytest.approx(expected.shortfall, rel=1e-9, abs=1e-9)
    top = await ranked_end_users(app, pool_id, Ranking.TOP_CONSUMERS, FIRST, now)
    assert [line.id for line in top] == expected.top
    close = await ranked_end_users(app, pool_id, Ranking.CLOSE_TO_RUNNING_OUT, FIRST, now)
    assert [line.id for line in close] == expected.close
    # each ranked End User with its window use now (its burn rate and exhaustion)
    window = dict(expected.by_exhaustion)
    for line in (*top, *close):
        assert line.balance is not None and line.balance.burn.window_used == window[line.id]
    # both in one statement: each as alone, whatever the other's length
    firsts = {Ranking.TOP_CONSUMERS: FIRST, Ranking.CLOSE_TO_RUNNING_OUT: FIRST - 1}
    both = await rankings(app, pool_id, firsts, now)
    assert both == {Ranking.TOP_CONSUMERS: top, Ranking.CLOSE_TO_RUNNING_OUT: close[: FIRST - 1]}
    # the summary with the rankings asked for, in one statement: each as alone
    assert await summary_and_rankings(app, pool_id, firsts, now) == (summary, both)
    for ranking, alone in ((Ranking.TOP_CONSUMERS, top), (Ranking.CLOSE_TO_RUNNING_OUT, close)):
        together = await summary_and_rankings(app, pool_id, {ranking: FIRST}, now)
        assert together == (summary, {ranking: alone})
    # a page ordered by projected exhaustion sums each End User's window use by joins
    listing = Listing(pool_id, order=OrderField.PROJECTED_EXHAUSTION)
    page = await end_user_page(app, listing, 100, None, now)
    found_order = [
        (line.id, line.balance.burn.window_used if line.balance else 0) for line in page.lines
    ]
    assert found_order == expected.by_exhaustion
    await _check_pages(app, pool_id, now)


# Orders by a balance, read through the report's indexes on PostgreSQL
# (`_report_candidates`): each walk of their pages equals the walk over every End User.
_BY_BALANCE = (OrderField.USED, OrderField.REMAINING, OrderField.PROJECTED_EXHAUSTION)
_STATUS_FILTERS: tuple[tuple[StatusFilter, ...], ...] = (
    (),
    (StatusFilter.LOW,),
    (StatusFilter.NO_ALLOCATION,),
    (StatusFilter.OK, StatusFilter.EXHAUSTED),
)


async def _walk(app: int, listing: Listing, now: datetime, by_report: bool) -> list[tuple]:
    """Every page of `listing`, two End Users a page: each page's (id, key, balance) lines,
    whether it has a next one and the total."""
    walked: list[tuple] = []
    after = None
    while True:
        page = await end_user_page(app, listing, 2, after, now, by_report=by_report)
        walked.append(
            (
                [(line.id, line.sort_key, line.balance) for line in page.lines],
                page.has_next,
                page.total,
            )
        )
        if not page.has_next:
            return walked
        last_id, last_key = page.keys[-1]
        after = (last_key, last_id)


async def _check_pages(app: int, pool_id: int, now: datetime) -> None:
    for order in _BY_BALANCE:
        for descending in (False, True):
            for statuses in _STATUS_FILTERS:
                listing = Listing(pool_id, statuses, order, descending)
                assert await _walk(app, listing, now, True) == await _walk(
                    app, listing, now, False
                ), listing


async def _fold_with_older_window(hours: int) -> None:
    """A fold, then its state made to look like it ran `hours` earlier: the window sums
    and the report recomputed for a window starting that much earlier."""
    await fold_usage()

    async def work(db: Sql) -> None:
        mark = await db.value("SELECT watermark FROM rollup_state WHERE id = 1")
        older = window_start(datetime.now(UTC)) - timedelta(hours=hours)
        await db.run("DELETE FROM end_user_window_usage")
        await db.run(
            "INSERT INTO end_user_window_usage (end_user_id, pool_id, used)"
            " SELECT end_user_id, pool_id, -SUM(amount) FROM ledger_entry"
            " WHERE kind = 'CONSUME' AND occurred_at >= $1 AND created_at < $2"
            " GROUP BY end_user_id, pool_id",
            older,
            mark,
        )
        await db.run("UPDATE rollup_state SET window_start = $1 WHERE id = 1", older)
        await refresh_balance_report(db, mark, mark, everything=True)

    await transaction(work)


async def _remaining(pool_id: int, end_user_id: int) -> int:
    value = await single_statement(
        lambda db: db.value(
            "SELECT remaining FROM end_user_balance WHERE end_user_id = $1 AND pool_id = $2",
            end_user_id,
            pool_id,
        )
    )
    return int(value or 0)


@pytest.mark.parametrize("seed", [1, 2])
async def test_summary_and_rankings_stay_exact_around_folds(backend: Backend, seed: int) -> None:
    rng = random.Random(seed)
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "report")).id
    await purchase_credits(app, "ai", 100_000)
    rows = await upsert_end_users(app, [EndUserInput(f"r{i}") for i in range(USERS)])
    users = [row.id for row in rows]
    pool_id = await single_statement(
        lambda db: db.value(
            "SELECT id FROM credit_pool WHERE application_id = $1 AND key = 'ai'", app
        )
    )
    for user in users[:-3]:  # the last three never get any (more than a page's worth)
        await allocate_credits(app, "ai", EndUserRef(id=user), rng.randint(20, 200))
    await set_low_balance_threshold(app, "ai", 30, end_user_default=True)
    await _check(app, pool_id)
    await fold_usage()
    await _check(app, pool_id)
    now = datetime.now(UTC)
    # around the window's start too (7 days ago, within the hour a moved window changes)
    hours_ago = [0, 1, 5, 30, 24 * 6, 24 * 7 - 1, 24 * 7, 24 * 7 + 1, 24 * 9]
    actions = [
        *("fold", "fold", "older fold", "threshold", "default", "release", "allocate"),
        "new End User",
    ]
    for _ in range(7):
        for _ in range(rng.randint(1, 4)):
            user = rng.choice(users)
            left = await _remaining(pool_id, user)
            if left:
                await consume_credits(
                    app,
                    "ai",
                    EndUserRef(id=user),
                    min(left, rng.randint(1, 60)),
                    "ai_generation",
                    occurred_at=now - timedelta(hours=rng.choice(hours_ago), minutes=30),
                )
        action = rng.choice(actions)
        user = rng.choice(users)
        if action == "fold":
            await fold_usage()
        elif action == "older fold":
            await _fold_with_older_window(1)
        elif action == "threshold":
            await set_low_balance_threshold(
                app, "ai", rng.randint(0, 100), end_user=EndUserRef(id=user)
            )
        elif action == "default":
            await set_low_balance_threshold(app, "ai", rng.randint(10, 80), end_user_default=True)
        elif action == "release" and await _remaining(pool_id, user):
            await release_credits(app, "ai", EndUserRef(id=user), 1)
        elif action == "allocate":
            await allocate_credits(app, "ai", EndUserRef(id=user), rng.randint(1, 50))
        elif action == "new End User":  # none in the report, no balance in the pool
            news = [EndUserInput(f"n{uuid.uuid4().hex[:6]}") for _ in range(2)]
            users += [row.id for row in await upsert_end_users(app, news)]
        await _check(app, pool_id)
        if rng.random() < 0.5:
            await fold_usage()
            await _check(app, pool_id)
    assert await verify_ledger() == []


async def test_a_threshold_change_after_the_fold_counts_at_once(backend: Backend) -> None:
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "report")).id
    await purchase_credits(app, "ai", 1_000)
    rows = await upsert_end_users(app, [EndUserInput(f"t{i}") for i in range(3)])
    for row in rows:
        await allocate_credits(app, "ai", EndUserRef(id=row.id), 50)
    pool_id = await single_statement(
        lambda db: db.value(
            "SELECT id FROM credit_pool WHERE application_id = $1 AND key = 'ai'", app
        )
    )
    await fold_usage()
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).low == 0
    await set_low_balance_threshold(app, "ai", 60, end_user=EndUserRef(id=rows[0].id))
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).low == 1
    await fold_usage()  # the report now holds the new status
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).low == 1
    await set_low_balance_threshold(app, "ai", 60, end_user_default=True)
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).low == 3
    await fold_usage()
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).low == 3
    await set_low_balance_threshold(app, "ai", None, end_user=EndUserRef(id=rows[0].id))
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).low == 3  # default 60
    await set_low_balance_threshold(app, "ai", 10, end_user_default=True)
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).low == 0
    await fold_usage()
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).low == 0


async def _one_pool_tenant(users: int, credits: int) -> tuple[int, int, list[int]]:
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "report")).id
    await purchase_credits(app, "ai", credits)
    rows = await upsert_end_users(app, [EndUserInput(f"b{i}") for i in range(users)])
    pool_id = await single_statement(
        lambda db: db.value(
            "SELECT id FROM credit_pool WHERE application_id = $1 AND key = 'ai'", app
        )
    )
    return app, pool_id, [row.id for row in rows]


async def test_a_shortfall_that_depends_on_the_time_is_taken_live(backend: Backend) -> None:
    # 1,000 used in the window, 999 left: short by h * 1000 - 999 only while the horizon
    # factor h = 7 / window length is above 0.999 (early in the hour).
    app, pool_id, (user,) = await _one_pool_tenant(1, 10_000)
    await allocate_credits(app, "ai", EndUserRef(id=user), 1_999)
    await consume_credits(app, "ai", EndUserRef(id=user), 1_000, "ai_generation")
    await fold_usage()
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    early = await allocation_summary(app, pool_id, hour)
    assert early.shortfall == pytest.approx(1.0)
    late = await allocation_summary(app, pool_id, hour + timedelta(minutes=59))
    assert late.shortfall == 0
    # so too with the rankings, which take only the changed End Users live
    for now, alone in ((hour, early), (hour + timedelta(minutes=59), late)):
        firsts = dict.fromkeys(Ranking, 10)
        summary, ranked = await summary_and_rankings(app, pool_id, firsts, now)
        assert summary == alone
        assert ranked == await rankings(app, pool_id, firsts, now)


async def test_use_a_moved_window_dropped_is_not_counted(backend: Backend) -> None:
    app, pool_id, users = await _one_pool_tenant(2, 10_000)
    for user in users:
        await allocate_credits(app, "ai", EndUserRef(id=user), 500)
    # just before today's window: inside the window of a fold an hour older
    dropped = window_start(datetime.now(UTC)) - timedelta(minutes=30)
    await consume_credits(
        app, "ai", EndUserRef(id=users[0]), 40, "ai_generation", occurred_at=dropped
    )
    await consume_credits(app, "ai", EndUserRef(id=users[1]), 7, "ai_generation")
    await _fold_with_older_window(1)
    summary = await allocation_summary(app, pool_id, datetime.now(UTC))
    assert summary.window_used == 7
    await _check(app, pool_id)
    await fold_usage()  # the window moves on: the report is rebuilt
    await _check(app, pool_id)


async def test_end_user_totals_stay_exact_under_concurrent_upserts_and_folds(
    backend: Backend,
) -> None:
    """The End User count (deltas written by triggers, merged by the fold) answers the
    allocation summary's total: upserts of overlapping external ids (new ones counted once,
    existing ones not at all) from many clients, with folds merging the deltas meanwhile."""
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "count")).id
    other = (await create_application(organization.id, "other")).id
    await upsert_end_users(other, [EndUserInput(f"o{i}") for i in range(7)])
    pool_id = await single_statement(
        lambda db: db.value(
            "SELECT id FROM credit_pool WHERE application_id = $1 AND key = 'ai'", app
        )
    )
    rng = random.Random(5)
    batches = [[EndUserInput(f"u{rng.randrange(300)}") for _ in range(40)] for _ in range(24)]
    batches = [list({item.external_id: item for item in batch}.values()) for batch in batches]

    async def folds() -> None:
        for _ in range(6):
            await fold_usage()

    async def upsert(batch: list[EndUserInput]) -> None:
        await upsert_end_users(app, batch)

    await asyncio.gather(folds(), *(upsert(batch) for batch in batches))
    expected = len({item.external_id for batch in batches for item in batch})
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).end_users_total == expected
    await fold_usage()
    rows = await single_statement(
        lambda db: db.rows(
            "SELECT application_id, delta FROM end_user_count WHERE application_id IN ($1, $2)",
            app,
            other,
        )
    )
    assert sorted((r["application_id"], r["delta"]) for r in rows) == [(app, expected), (other, 7)]
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).end_users_total == expected
    assert await verify_ledger() == []


async def test_reports_planned_once_run_on_their_own_pool(backend: Backend) -> None:
    """The summary and rankings read with generic plans (models.sql `planned_once`) on a
    pool of their own: many at once, and one that fails, and the main pool's connections
    plan as PostgreSQL chooses; inside a caller's transaction a read runs as it comes and
    the caller's setting stays."""
    app, pool_id, ids = await _one_pool_tenant(6, 1_000)
    for end_user_id in ids:
        await allocate_credits(app, "ai", EndUserRef(id=end_user_id), 40)
        await consume_credits(app, "ai", EndUserRef(id=end_user_id), 7, "ai_generation")
    await fold_usage()
    await _check(app, pool_id)
    now = datetime.now(UTC)
    reads = [allocation_summary(app, pool_id, now) for _ in range(12)]
    reads += [ranked_end_users(app, pool_id, ranking, FIRST, now) for ranking in Ranking] * 6
    await asyncio.gather(*reads)
    if not backend.postgres:
        return

    with pytest.raises(Exception, match="division by zero"):  # a read that fails ends too
        await single_statement(lambda db: db.records("SELECT 1 / 0 AS x", planned_once=True))

    async def setting(db: Sql) -> str:
        return await db.value("SHOW plan_cache_mode")

    seen = await asyncio.gather(*(single_statement(setting) for _ in range(24)))
    assert set(seen) == {"auto"}

    async def planned(db: Sql) -> str:
        rows = await db.records("SHOW plan_cache_mode", planned_once=True)
        return rows[0]["plan_cache_mode"]

    seen = await asyncio.gather(*(single_statement(planned) for _ in range(8)))
    assert set(seen) == {"force_generic_plan"}

    async def inside(db: Sql) -> tuple[int, str]:
        await db.run("SET LOCAL plan_cache_mode = force_custom_plan")
        rows = await db.records("SELECT COUNT(*) AS n FROM end_user_balance", planned_once=True)
        return int(rows[0]["n"]), await db.value("SHOW plan_cache_mode")

    count, mode = await transaction(inside)
    assert count >= len(ids) and mode == "force_custom_plan"


def _summary_reads(planned: list[str]) -> list[str]:
    """Which statement read each summary with its rankings, in order: the reports alone
    ("folded") or the live one ("live")."""
    kinds = []
    for statement in planned:
        if statement.startswith("WITH s AS (SELECT"):
            kinds.append("folded")
        elif " AS s_quiet" in statement:
            kinds.append("live")
    return kinds


async def test_a_pool_unchanged_since_the_fold_is_summed_from_the_reports_alone(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL, once a read found no End User of the pool changed since the fold, the
    next ones read the summary and rankings from the reports alone; each kind of change
    sends them back to the live statement (the folded one saying it cannot answer), until
    the next fold. Every answer is what the live balances and the ledger say, the shortfall
    of an End User whose shortfall depends on the time (borderline) to the bit."""
    app, pool_id, ids = await _one_pool_tenant(7, 10_000)
    for end_user_id in ids[:-1]:
        await allocate_credits(app, "ai", EndUserRef(id=end_user_id), 40)
        await consume_credits(app, "ai", EndUserRef(id=end_user_id), 7, "ai_generation")
    # short by h * 1000 - 999, h = 7 / the window's length: positive early in the hour only
    await allocate_credits(app, "ai", EndUserRef(id=ids[-1]), 1_999)
    await consume_credits(app, "ai", EndUserRef(id=ids[-1]), 1_000, "ai_generation")
    await fold_usage()
    borderline = await single_statement(
        lambda db: db.value(
            "SELECT COUNT(*) FROM balance_report WHERE pool_id = $1 AND shortfall_class = 2",
            pool_id,
        )
    )
    assert borderline == 1
    planned = planned_once(monkeypatch)

    async def reads() -> list[str]:
        planned.clear()
        await _check(app, pool_id)
        return _summary_reads(planned)

    for change in balance_changes(app, ids).values():
        settled = await reads()
        if backend.postgres:
            assert settled[0] == "live" or set(settled) == {"folded"}, settled
            assert settled[-1] == "folded", settled
        await change()
        after = await reads()
        if backend.postgres:  # tried once, then the live statement until the next fold
            assert after[0] == "folded" and set(after[1:]) == {"live"}, after
        await fold_usage()
    # a new End User holds no balance: the pool stays unchanged, its total counts it
    await reads()
    await upsert_end_users(app, [EndUserInput("newcomer")])
    assert set(await reads()) == ({"folded"} if backend.postgres else set())
    assert (await allocation_summary(app, pool_id, datetime.now(UTC))).end_users_total == 8
    # at the hour's start the borderline End User is short by 1: the folded read adds it
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    firsts = {ranking: FIRST for ranking in Ranking}
    planned.clear()
    summary, _ = await summary_and_rankings(app, pool_id, firsts, hour)
    assert _summary_reads(planned) == (["folded"] if backend.postgres else [])
    assert summary == await allocation_summary(app, pool_id, hour)
    assert summary.shortfall == pytest.approx(1.0)
    assert await verify_ledger() == []


async def test_id_ordered_pages_and_pool_series_are_planned_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An End User page in id order, a page ordered by a balance (on PostgreSQL, read from
    the balance report's candidates) and a pool's series read the same indexes whatever the
    application, so they are planned once; a page under a status filter is not (how many
    End Users it walks to fill a page depends on the application's size)."""
    app, pool_id, ids = await _one_pool_tenant(3, 1_000)
    await allocate_credits(app, "ai", EndUserRef(id=ids[0]), 40)
    await consume_credits(app, "ai", EndUserRef(id=ids[0]), 5, "ai_generation")
    planned = planned_once(monkeypatch)
    now = datetime.now(UTC)
    page = await end_user_page(app, Listing(), 2, None, now)
    assert [key[0] for key in page.keys] == sorted(ids)[:2] and page.total == 3
    by_id = len(planned)
    by_balance = Listing(pool_id=pool_id, order=OrderField.REMAINING)
    await end_user_page(app, by_balance, 2, None, now)
    by_report = len(planned)
    filtered = Listing(pool_id, (StatusFilter.OK,), OrderField.REMAINING)
    await end_user_page(app, filtered, 2, None, now)
    assert len(planned) == by_report
    day = bucket_range(now - timedelta(days=2), now, Granularity.DAY)
    (series,) = await consumption_series([SeriesKey(app, day, pool_id)])
    assert sum(series.used) == 5
    if backend.postgres:
        assert by_id == 1 and "end_user e" in planned[0]
        assert by_report == 2 and "balance_report r" in planned[1]
        assert len(planned) == 3 and "usage_rollup_day" in planned[2]
    else:
        assert planned == []  # SQLite has one connection and plans as it does


async def test_a_status_filters_total_counts_every_end_user_of_those_statuses(
    backend: Backend,
) -> None:
    """The total of a filtered page, counted from the pool's balances, equals the End Users
    a page walk finds, for each status and mixes with and without NO_ALLOCATION: End Users
    without a balance, one whose allocation went back to the pool (a balance in
    NO_ALLOCATION), LOW, EXHAUSTED and OK ones, and another application's End Users in a
    pool of its own."""
    app, pool_id, ids = await _one_pool_tenant(9, 1_000)
    await set_low_balance_threshold(app, "ai", 10, end_user_default=True)
    for user, credits in zip(ids[:5], (50, 50, 8, 20, 30), strict=True):
        await allocate_credits(app, "ai", EndUserRef(id=user), credits)
    await consume_credits(app, "ai", EndUserRef(id=ids[1]), 50, "ai_generation")  # EXHAUSTED
    await release_credits(app, "ai", EndUserRef(id=ids[3]), 20)  # NO_ALLOCATION, with a row
    await consume_credits(app, "ai", EndUserRef(id=ids[4]), 21, "ai_generation")  # LOW
    other, _, other_ids = await _one_pool_tenant(4, 100)
    await allocate_credits(other, "ai", EndUserRef(id=other_ids[0]), 5)
    expected = {"OK": 1, "LOW": 2, "EXHAUSTED": 1, "NO_ALLOCATION": 5}
    now = datetime.now(UTC)
    for size in range(1, len(StatusFilter) + 1):
        for statuses in itertools.combinations(StatusFilter, size):
            listing = Listing(pool_id, statuses)
            walked = await _walk(app, listing, now, True)
            found = sum(len(lines) for lines, _, _ in walked)
            assert found == sum(expected[s.value] for s in statuses), statuses
            assert {total for _, _, total in walked} == {found}, statuses
