"""Usage reporting: consumption series equal the ledger, buckets are contiguous
UTC periods, burn rates and projections, the allocation summary, End User filters and
orders, and a dashboard query whose statement count does not grow with the End Users."""

from __future__ import annotations

import asyncio
import gc
import math
import random
import statistics
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import orjson
import pytest
import strawberry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.http_answer import encode_json
from bench.dashboard_query import DASHBOARD
from models import consumption as consumption_module
from models.access import Principal
from models.accounts import create_application, create_organization
from models.allocation_report import (
    BurnSql,
    _balance_value,
    _Params,
    balance_lines,
    burn_params,
    burn_rate,
    exhaustion_time,
    window_days,
    write_burns,
)
from models.billing import billing_period, month_start
from models.clock import booked_at
from models.consumption import (
    MAD_TO_SIGMA,
    MIN_SPIKE_BUCKETS,
    SPIKE_SIGMAS,
    Granularity,
    SeriesKey,
    bucket_floor,
    bucket_range,
    consumption_series,
    spikes,
)
from models.end_users import EndUserInput, upsert_end_users
from models.errors import ValidationFailed
from models.ledger import allocate_credits, consume_credits, purchase_credits
from models.references import EndUserRef
from models.rollups import fold_usage, rebuild_rollups, window_start
from models.sql import Sql, single_statement, transaction
from models.tenancy import ApiKeyRole
from models.verify import verify_ledger
from resolvers.context import Context
from resolvers.runtime.plain_lists import PlainListExecutor
from resolvers.schema import Mutation, Query, Subscription, schema
from tests.conftest import Backend
from tests.ledger_helpers import application_with_allocations
from tests.statement_counter import counting

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEATURES = ("ai_generation", "ai_rewrite")


# ---------------------------------------------------------------------- bucket arithmetic


def test_buckets_are_whole_utc_periods_and_weeks_start_on_monday() -> None:
    moment = datetime(2026, 3, 5, 17, 42, 9, tzinfo=UTC)  # a Thursday
    assert bucket_floor(moment, Granularity.HOUR) == datetime(2026, 3, 5, 17, tzinfo=UTC)
    assert bucket_floor(moment, Granularity.DAY) == datetime(2026, 3, 5, tzinfo=UTC)
    assert bucket_floor(moment, Granularity.WEEK) == datetime(2026, 3, 2, tzinfo=UTC)
    assert bucket_floor(moment, Granularity.WEEK).weekday() == 0
    assert bucket_floor(moment, Granularity.MONTH) == datetime(2026, 3, 1, tzinfo=UTC)
    # Another offset names the same instant: buckets follow UTC, not the caller's zone.
    east = moment.astimezone(__import__("datetime").timezone(timedelta(hours=9)))
    assert bucket_floor(east, Granularity.DAY) == datetime(2026, 3, 5, tzinfo=UTC)
    months = bucket_range(
        datetime(2025, 11, 20, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), Granularity.MONTH
    )
    assert months.starts() == [
        datetime(2025, 11, 1, tzinfo=UTC),
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    ]
    weeks = bucket_range(
        datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 17, 1, tzinfo=UTC), Granularity.WEEK
    )
    assert [s.day for s in weeks.starts()] == [2, 9, 16]
    assert weeks.end == datetime(2026, 3, 23, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "granularity"),
    [
        (datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), Granularity.DAY),
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), Granularity.DAY),
        (datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 3, 1, tzinfo=UTC), Granularity.HOUR),
        (datetime(2026, 1, 1), datetime(2026, 1, 2, tzinfo=UTC), Granularity.DAY),
    ],
)
def test_bad_ranges_are_validation_errors(
    start: datetime, end: datetime, granularity: Granularity
) -> None:
    with pytest.raises(ValidationFailed):
        bucket_range(start, end, granularity)


_USES = st.one_of(st.integers(-5, 5), st.integers(-(2**31), 2**31 - 1))
_MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_USES, _USES), min_size=1, max_size=12), _MOMENTS)
def test_burn_marks_are_written_as_the_general_path_serializes_them(
    balances: list[tuple[int, int]], now: datetime
) -> None:
    """The page writer's burn values (`write_burns`) equal `burn_rate` and
    `exhaustion_time` encoded as an answer, for any use and remaining (none, negative, past
    the calendar's end) and a moment in UTC or another offset."""

    def node(window_used: int, remaining: int, value: Any = None, at: Any = None) -> str:
        if value is None:
            value = f"\x1eR{window_used},{remaining}\x1f"
            at = f"\x1eE{window_used},{remaining}\x1f"
        return f'{{"burnRatePerDay":{value},"projectedExhaustionAt":{at}}}'

    texts = {i: node(*pair) for i, pair in enumerate(balances)}

    def iso(at: datetime | None) -> str:  # as Strawberry's DateTime serializes it
        return "null" if at is None else f'"{at.isoformat()}"'

    expected = {
        i: node(
            0,
            0,
            encode_json(burn_rate(used, now)).decode(),
            iso(exhaustion_time(used, remaining, now)),
        )
        for i, (used, remaining) in enumerate(balances)
    }
    assert write_burns(texts, now) == expected


def _burn_cases(rng: random.Random) -> list[tuple[int, int]]:
    """(window use, remaining) pairs: none used, the usual, a remaining beyond what the
    database writes (10^7), an exhaustion past the calendar's end, uses up to 10^15."""
    edges = [(0, 0), (0, 5), (1, 0), (1, 1), (7, 10_000_000), (1, 10_000_000)]
    edges += [(3, 10_000_001), (999_999_999_999_999, 1), (10**15, 3), (2, 2**31 - 1)]
    drawn = [
        (
            rng.choice([rng.randint(0, 50), rng.randint(1, 10**6), rng.randint(1, 10**15)]),
            rng.choice([rng.randint(0, 100), rng.randint(0, 10**7), rng.randint(0, 2**31)]),
        )
        for _ in range(400)
    ]
    return edges + drawn


async def _burn_texts(postgres: bool, cases: list[tuple[int, int]], now: datetime) -> list[str]:
    """Each case's `{"r": rate, "e": exhaustion}` as a page's statement writes it on
    PostgreSQL (values or marks), else as marks."""
    if not postgres:
        return [f'{{"r":\x1eR{u},{r}\x1f,"e":\x1eE{u},{r}\x1f}}' for u, r in cases]
    param = _Params(3)
    # (a moment in another zone: marks, its offset written by the server)
    burn = BurnSql(param) if now.tzinfo is UTC else None
    rate = _balance_value("burnRatePerDay", burn)
    at = _balance_value("projectedExhaustionAt", burn)
    statement = (
        f"SELECT ('{{\"r\":' || {rate} || ',\"e\":' || {at} || '}}') AS t"
        " FROM unnest($1::int8[], $2::int8[]) WITH ORDINALITY AS x(window_used, remaining, i)"
        " ORDER BY i"
    )
    used, remaining = [c[0] for c in cases], [c[1] for c in cases]
    params = burn_params(param.names, now)
    rows = await single_statement(lambda db: db.records(statement, used, remaining, *params))
    return [row["t"] for row in rows]


async def test_burn_values_written_by_the_database_equal_the_general_path(
    backend: Backend,
) -> None:
    """On PostgreSQL the page's statement writes the burn values itself where it can
    (`_burn_values_sql`), marks elsewhere: with `write_burns` after it, each equals
    `burn_rate` and `exhaustion_time` encoded as an answer, at moments on and off a
    whole second. On SQLite the marks alone do."""
    cases = _burn_cases(random.Random(20261206))
    base = datetime(2026, 12, 6, 6, 0, 0, tzinfo=UTC)
    for now in (base, base + timedelta(minutes=17, microseconds=1), datetime.now(UTC)):
        texts = dict(enumerate(await _burn_texts(backend.postgres, cases, now)))
        written = write_burns(texts, now)
        for i, (used, remaining) in enumerate(cases):
            at = exhaustion_time(used, remaining, now)
            expected = {"r": burn_rate(used, now), "e": None if at is None else at.isoformat()}
            assert orjson.loads(written[i]) == expected, (now, used, remaining, texts[i])
            rate = encode_json(burn_rate(used, now)).decode()  # the very spelling
            assert written[i].startswith(f'{{"r":{rate},'), (now, used, remaining, written[i])
        if backend.postgres:  # most written by the database, the rest marked
            marked = sum("\x1e" in text for text in texts.values())
            assert 0 < marked < len(cases) // 2, marked


def test_spike_rule_flags_a_burst_but_not_a_flat_or_weekly_series() -> None:
    assert not any(spikes([5] * 30))
    assert not any(spikes([30, 31, 29, 30, 32, 10, 11] * 4))  # weekdays and weekends
    flags = spikes([30, 31, 29, 30, 32, 10, 11] * 4 + [180])
    assert flags[-1] and sum(flags) == 1
    assert not any(spikes([0] * 40 + [1]))  # one stray credit is no spike
    assert spikes([0] * 40 + [9])[-1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(2**40), 2**40) | st.integers(0, 20), max_size=40))
def test_spike_rule_is_the_documented_formula(used: list[int]) -> None:
    """The rule, stated with `statistics.median`: any length (odd, even, under the minimum),
    ties, negative uses (a series narrowed by a release) and values past 32 bits."""
    if len(used) < MIN_SPIKE_BUCKETS:
        assert spikes(used) == [False] * len(used)
        return
    median = statistics.median(used)
    sigma = MAD_TO_SIGMA * statistics.median(abs(value - median) for value in used)
    threshold = median + max(SPIKE_SIGMAS * sigma, median, 1)
    assert spikes(used) == [value > threshold for value in used]


# ---------------------------------------------------------------------------- histories


async def _ledger_sums(app: int, start: datetime, end: datetime) -> dict[str, Any]:
    """Straight from the ledger: what a series over [start, end) must add up to."""

    async def work(db: Sql) -> list[dict[str, Any]]:
        return await db.rows(
            "SELECT l.pool_id, l.end_user_id, l.kind, l.feature, l.amount FROM ledger_entry l"
            " WHERE l.application_id = $1 AND l.occurred_at >= $2 AND l.occurred_at < $3",
            app,
            start,
            end,
        )

    sums: dict[str, Any] = defaultdict(int)
    for row in await single_statement(work):
        if row["kind"] == "CONSUME":
            for key in (
                ("used", row["pool_id"]),
                ("used", row["pool_id"], row["feature"]),
                ("used_user", row["end_user_id"], row["pool_id"]),
            ):
                sums[key] += -row["amount"]
        elif row["kind"] == "EXPIRE":
            sums[("expired", row["pool_id"])] += -row["amount"]
        elif row["kind"] == "PURCHASE":
            sums[("purchased", row["pool_id"])] += row["amount"]
    return sums


async def booked_remaining(pool_id: int, end_user_id: int | None, until: datetime) -> int:
    """Straight from the ledger: the pool's (or End User's) remaining as the ledger stood
    at `until`, the net of the entries created before it."""
    kinds, owner = "('PURCHASE', 'CONSUME', 'EXPIRE')", "1 = 1"
    if end_user_id is not None:
        kinds = "('ALLOCATE', 'RELEASE', 'CONSUME', 'EXPIRE')"
        owner = f"l.end_user_id = {end_user_id}"
    net = await single_statement(
        lambda db: db.value(
            "SELECT CAST(COALESCE(SUM(l.amount), 0) AS BIGINT) AS net FROM ledger_entry l"
            f" WHERE l.pool_id = $1 AND {owner} AND l.kind IN {kinds} AND l.created_at < $2",
            pool_id,
            until,
        )
    )
    return int(net)


async def _pool_ids(app: int) -> dict[str, int]:
    rows = await single_statement(
        lambda db: db.rows("SELECT id, key FROM credit_pool WHERE application_id = $1", app)
    )
    return {row["key"]: row["id"] for row in rows}


CONSUMPTION = st.tuples(
    st.integers(0, 2),  # End User
    st.sampled_from(("ai", "ai", "inbox_preview")),
    st.integers(1, 50),  # credits
    st.sampled_from(FEATURES),
    st.integers(0, 24 * 70),  # hours ago (70 days)
    st.integers(0, 59),  # minute
    st.booleans(),  # fold after it
)


@SETTINGS
@given(
    history=st.lists(CONSUMPTION, min_size=1, max_size=25),
    granularity=st.sampled_from(list(Granularity)),
    span=st.tuples(st.integers(0, 24 * 75), st.integers(1, 24 * 80)),
)
async def test_bucket_sums_equal_the_ledger(
    backend: Backend, history: list[tuple], granularity: Granularity, span: tuple[int, int]
) -> None:
    app, users = await application_with_allocations()
    now = datetime.now(UTC)
    for user, pool, credits, feature, hours_ago, minute, fold in history:
        moment = now - timedelta(hours=hours_ago, minutes=minute)
        await consume_credits(
            app, pool, EndUserRef(id=users[user]), credits, feature, occurred_at=moment
        )
        if fold:
            await fold_usage()
    start = now - timedelta(hours=span[0] + span[1])
    end = now - timedelta(hours=span[0]) + timedelta(minutes=1)
    buckets = bucket_range(start, end, granularity)
    sums = await _ledger_sums(app, buckets.start, buckets.end)
    pools = await _pool_ids(app)
    keys = [SeriesKey(app, buckets, pool_id=p) for p in pools.values()]
    keys += [SeriesKey(app, buckets, pool_id=pools["ai"], feature=FEATURES[0])]
    keys += [SeriesKey(app, buckets)]  # every pool
    keys += [SeriesKey(app, buckets, pool_id=pools["ai"], end_user_id=u) for u in users]
    series = await consumption_series(keys)
    for key, found in zip(keys, series, strict=True):
        assert len(found.buckets) == buckets.count  # empty buckets included
        assert [b.start for b in found.buckets] == buckets.starts()
        assert {type(v) for b in found.buckets for v in (b.used, b.expired, b.remaining)} <= {int}
        if key.end_user_id is not None:
            assert found.total_used == sums[("used_user", key.end_user_id, key.pool_id)]
        elif key.pool_id is None:
            assert found.total_used == sum(sums[("used", p)] for p in pools.values())
        elif key.feature is not None:
            assert found.total_used == sums[("used", key.pool_id, key.feature)]
        else:
            assert found.total_used == sums[("used", key.pool_id)]
            assert sum(b.purchased for b in found.buckets) == sums[("purchased", key.pool_id)]
    # Remaining at each bucket's end: the balance as the ledger stood then, the net of
    # every entry booked (created) before it.
    ai = series[0]
    for bucket, next_start in zip(ai.buckets, [*buckets.starts()[1:], buckets.end], strict=True):
        assert bucket.remaining == await booked_remaining(pools["ai"], None, next_start)
    assert await verify_ledger() == []


async def test_pool_series_read_the_rollups_once_per_fold(backend: Backend) -> None:
    """A pool series keeps what it read of the rollups until the next fold or rebuild
    (PostgreSQL) and answers as a series read afresh does: with entries in the tail, after
    a fold, after history booked in the past and the rollups rebuilt."""
    app, users = await application_with_allocations(2)
    pools = await _pool_ids(app)
    now = datetime.now(UTC)
    buckets = bucket_range(now - timedelta(days=20), now + timedelta(hours=1), Granularity.DAY)
    keys = [SeriesKey(app, buckets, pool_id=p) for p in sorted(pools.values())]
    keys += [SeriesKey(app, buckets), SeriesKey(app, buckets, pools["ai"], feature=FEATURES[1])]
    kept_sums = consumption_module._KEPT_SUMS
    pool_keys = (app, buckets, None, None)  # (one of the keys asks for every pool)

    async def consume(user: int, credits: int, days_ago: int) -> None:
        moment = now - timedelta(days=days_ago, minutes=user)
        ref = EndUserRef(id=users[user])
        await consume_credits(app, "ai", ref, credits, FEATURES[user], occurred_at=moment)

    assembled = consumption_module._ASSEMBLED

    async def answers_as_afresh() -> tuple[int, int] | None:
        kept = await consumption_series(keys)
        again = await consumption_series(keys)  # nothing changed: each series as assembled
        assert all(a is b for a, b in zip(again, kept, strict=True)) or not backend.postgres
        version = kept_sums.kept(pool_keys)[0]
        kept_sums.clear()
        assembled.clear()
        assert kept == await consumption_series(keys)
        sums = await _ledger_sums(app, buckets.start, buckets.end)
        assert kept[0].total_used == sums[("used", pools["ai"])]
        assert kept[-1].total_used == sums[("used", pools["ai"], FEATURES[1])]
        return version if backend.postgres else None

    await consume(0, 5, 3)
    await fold_usage()
    folded = await answers_as_afresh()
    long = bucket_range(now - timedelta(days=50), now, Granularity.HOUR)  # 1,200 buckets
    long_keys = [SeriesKey(app, long, pool_id=pools["ai"])]
    assert long.count > consumption_module.KEPT_BUCKETS
    first, again = await consumption_series(long_keys), await consumption_series(long_keys)
    assert first == again and first[0] is not again[0]  # too long to be kept
    assert kept_sums.kept((app, long, None, frozenset({pools["ai"]})))[1] is None
    before = await consumption_series(keys)
    await consume(1, 7, 2)  # in the tail
    await consume(0, 11, 0)
    after = await consumption_series(keys)  # the tail changed: assembled anew
    assert after[0] is not before[0] and after[0].total_used == before[0].total_used + 18
    assert await answers_as_afresh() == folded  # the rollups were not read again
    if backend.postgres:  # and a statement given their version does not read them
        rows = await single_statement(
            lambda db: consumption_module._pool_rows(db, keys[:3], kept_sums.kept(pool_keys)[0])
        )
        assert {row["source"] for row in rows} == {1, 2}
        assert folded is not None and folded != consumption_module.folded_sums.NONE
    await fold_usage()
    refolded = await answers_as_afresh()
    assert refolded != folded or not backend.postgres
    with booked_at(now - timedelta(days=4)):
        await consume(1, 13, 4)
    await rebuild_rollups()
    assert await answers_as_afresh() not in {folded, refolded} or not backend.postgres


async def test_series_are_contiguous_with_empty_buckets(backend: Backend) -> None:
    app, users = await application_with_allocations(1)
    day = bucket_floor(datetime.now(UTC), Granularity.DAY) - timedelta(days=10)
    await consume_credits(
        app, "ai", EndUserRef(id=users[0]), 7, "ai_generation", occurred_at=day + timedelta(hours=5)
    )
    buckets = bucket_range(day - timedelta(days=3), day + timedelta(days=4), Granularity.DAY)
    pools = await _pool_ids(app)
    (series,) = await consumption_series([SeriesKey(app, buckets, pool_id=pools["ai"])])
    assert [b.used for b in series.buckets] == [0, 0, 0, 7, 0, 0, 0]
    assert [b.start for b in series.buckets] == [day + timedelta(days=i) for i in range(-3, 4)]
    # Used follows occurredAt, remaining the ledger as it stood: the credits were bought
    # today and this consumption booked today (sent as having occurred 10 days ago), so
    # nothing was on the ledger at the end of any of these buckets.
    assert [b.remaining for b in series.buckets] == [0] * 7
    hours = bucket_range(day + timedelta(hours=4), day + timedelta(hours=6), Granularity.HOUR)
    (series,) = await consumption_series([SeriesKey(app, hours, pool_id=pools["ai"])])
    assert [(b.start.hour, b.used) for b in series.buckets] == [(4, 0), (5, 7)]


# ------------------------------------------------------------------------------ burn rates


async def _window_used(app: int) -> dict[tuple[int, int], int]:
    start = window_start(datetime.now(UTC))
    rows = await single_statement(
        lambda db: db.rows(
            "SELECT end_user_id, pool_id, -SUM(amount) AS used FROM ledger_entry"
            " WHERE application_id = $1 AND kind = 'CONSUME' AND occurred_at >= $2"
            " GROUP BY end_user_id, pool_id",
            app,
            start,
        )
    )
    return {(r["end_user_id"], r["pool_id"]): int(r["used"]) for r in rows}


def _projected(used: int, remaining: int, now: datetime) -> datetime:
    """now + remaining / (used / window) to the nearest microsecond, halves up: the
    documented projection, in exact rationals."""
    window = Fraction((now - window_start(now)) // timedelta(microseconds=1))
    return now + timedelta(microseconds=math.floor(remaining * window / used + Fraction(1, 2)))


async def _check_burn(app: int, users: list[int]) -> None:
    now = datetime.now(UTC)
    expected = await _window_used(app)
    lines = await balance_lines(users, now)
    for user in users:
        for line in lines[user]:
            used = expected.get((user, line.pool_id), 0)
            assert line.burn.window_used == used
            assert line.burn.rate_per_day == pytest.approx(used / window_days(now))
            if used:
                assert line.burn.exhaustion_at == _projected(used, line.remaining, now)
            else:
                assert line.burn.exhaustion_at is None


async def test_burn_rate_is_exact_before_and_after_folds(backend: Backend) -> None:
    app, users = await application_with_allocations(3)
    now = datetime.now(UTC)
    for i, hours_ago in enumerate((1, 30, 24 * 6, 24 * 7 + 5, 24 * 20)):
        await consume_credits(
            app,
            "ai",
            EndUserRef(id=users[i % 2]),
            10 + i,
            "ai_generation",
            occurred_at=now - timedelta(hours=hours_ago),
        )
    await _check_burn(app, users)  # all in the tail (or folded by another test)
    await fold_usage()
    await _check_burn(app, users)
    await consume_credits(app, "ai", EndUserRef(id=users[2]), 5, "ai_rewrite")
    await _check_burn(app, users)  # folded sums plus the tail

    # A fold from two hours ago: its window started two hours earlier than today's.
    async def older_fold(db: Sql) -> None:
        await fold_usage_state_back(db, hours=2)

    await transaction(older_fold)
    await _check_burn(app, users)
    await fold_usage()
    await _check_burn(app, users)


async def fold_usage_state_back(db: Sql, hours: int) -> None:
    """Makes the rollup look like it was folded with an older window: the same watermark,
    the window start `hours` earlier and the window sums recomputed for it."""
    state = await db.row("SELECT watermark FROM rollup_state WHERE id = 1")
    assert state is not None
    older = window_start(datetime.now(UTC)) - timedelta(hours=hours)
    await db.run("DELETE FROM end_user_window_usage")
    await db.run(
        "INSERT INTO end_user_window_usage (end_user_id, pool_id, used)"
        " SELECT end_user_id, pool_id, -SUM(amount) FROM ledger_entry WHERE kind = 'CONSUME'"
        " AND occurred_at >= $1 AND created_at < $2 GROUP BY end_user_id, pool_id",
        older,
        state["watermark"],
    )
    await db.run("UPDATE rollup_state SET window_start = $1 WHERE id = 1", older)


# ------------------------------------------------------------------- GraphQL: the reports


async def _execute(
    app: int, query: str, *, preserialized: bool = False, **variables: Any
) -> dict[str, Any]:
    """The query's data, as an in-process caller gets it, or with `preserialized` as an
    HTTP request's answer is made (values the encoder splices)."""
    principal = Principal(
        organization_id=0, application_id=app, role=ApiKeyRole.READ, api_key_id=None, key_id=None
    )
    context = Context(request=None, response=None, principal=principal, preserialized=preserialized)
    result = await schema.execute(query, variable_values=variables, context_value=context)
    assert result.errors is None, result.errors
    assert result.data is not None
    return result.data


async def _errors(app: int, query: str, **variables: Any) -> list[str]:
    principal = Principal(
        organization_id=0, application_id=app, role=ApiKeyRole.READ, api_key_id=None, key_id=None
    )
    context = Context(request=None, response=None, principal=principal)
    result = await schema.execute(query, variable_values=variables, context_value=context)
    return [error.extensions["code"] for error in result.errors or []]


CONSUMPTION_QUERY = """
query($id: ID!, $from: DateTime!, $to: DateTime!, $g: Granularity!) {
  application(id: $id) {
    consumption(from: $from, to: $to, granularity: $g, pool: "ai") {
      granularity totalUsed buckets { start used }
    }
  }
}"""


async def test_bad_ranges_answer_typed_errors(backend: Backend) -> None:
    app, _ = await application_with_allocations(1)
    cases = [
        ("2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z", "DAY"),
        ("2020-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "HOUR"),
        ("2026-01-01T00:00:00", "2026-02-01T00:00:00Z", "DAY"),
    ]
    for start, end, granularity in cases:
        codes = await _errors(
            app, CONSUMPTION_QUERY, id=str(app), **{"from": start, "to": end, "g": granularity}
        )
        assert codes == ["VALIDATION"], (start, end, codes)
    data = await _execute(
        app,
        CONSUMPTION_QUERY,
        id=str(app),
        **{"from": "2026-03-04T10:00:00+02:00", "to": "2026-03-18T00:00:00Z", "g": "WEEK"},
    )
    buckets = data["application"]["consumption"]["buckets"]
    assert [b["start"] for b in buckets] == [
        "2026-03-02T00:00:00+00:00",
        "2026-03-09T00:00:00+00:00",
        "2026-03-16T00:00:00+00:00",
    ]


SUMMARY_QUERY = """
query($id: ID!) {
  application(id: $id) {
    allocationSummary(pool: "ai") {
      pool endUsersTotal withAllocation withCredits low exhausted allocated used remaining
      unallocated burnRatePerDay projectedShortfall needsAllocation
      topConsumers(first: 2) { used endUser { externalId } }
      closeToRunningOut(first: 3) {
        remaining burnRatePerDay projectedExhaustionAt endUser { externalId }
      }
    }
  }
}"""

PAGE_QUERY = """
query($id: ID!, $after: String, $filter: EndUserFilter, $order: EndUserOrder) {
  application(id: $id) {
    endUsers(first: 2, after: $after, filter: $filter, orderBy: $order) {
      totalCount pageInfo { hasNextPage endCursor }
      edges { node { externalId balance(pool: "ai") { used remaining status } } }
    }
  }
}"""


async def _all_pages(app: int, **variables: Any) -> tuple[list[str], int]:
    names: list[str] = []
    after = None
    while True:
        data = await _execute(app, PAGE_QUERY, id=str(app), after=after, **variables)
        page = data["application"]["endUsers"]
        names += [edge["node"]["externalId"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return names, page["totalCount"]
        after = page["pageInfo"]["endCursor"]


async def test_allocation_summary_filters_and_orders(backend: Backend) -> None:
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "summary")).id
    await purchase_credits(app, "ai", 1_000)
    await upsert_end_users(app, [EndUserInput(f"e{i}") for i in range(6)])
    allocations = {"e0": 100, "e1": 100, "e2": 50, "e3": 10, "e4": 200}  # e5: none
    for name, credits in allocations.items():
        await allocate_credits(app, "ai", EndUserRef(external_id=name), credits)
    for name, credits in {"e0": 30, "e1": 60, "e2": 50, "e3": 2, "e4": 1}.items():
        await consume_credits(app, "ai", EndUserRef(external_id=name), credits, "ai_generation")
    from models.alerts import set_low_balance_threshold

    await set_low_balance_threshold(app, "ai", 40, end_user_default=True)
    data = await _execute(app, SUMMARY_QUERY, id=str(app))
    summary = data["application"]["allocationSummary"]
    assert summary["endUsersTotal"] == 6
    assert summary["withAllocation"] == 5
    assert summary["withCredits"] == 4  # e2 is exhausted
    assert summary["exhausted"] == 1
    assert summary["low"] == 2  # e3 (8 left) and e1 (40 left)
    assert (summary["allocated"], summary["used"], summary["unallocated"]) == (460, 143, 540)
    assert summary["remaining"] == 460 - 143
    window = window_days(datetime.now(UTC))
    assert summary["burnRatePerDay"] == pytest.approx(143 / window, rel=1e-3)
    # 7-day needs beyond what each holds, (used in the window, remaining) per End User
    held = ((30, 70), (60, 40), (50, 0), (2, 8), (1, 199))
    needs = sum(max(0.0, 7 * used / window - left) for used, left in held)
    assert summary["projectedShortfall"] == int(-(-needs // 1))
    assert summary["needsAllocation"] is (needs > 540)
    assert [c["endUser"]["externalId"] for c in summary["topConsumers"]] == ["e1", "e2"]
    close = summary["closeToRunningOut"]
    assert [c["endUser"]["externalId"] for c in close] == ["e1", "e0", "e3"]  # 40/60 < 70/30 < 8/2
    assert close[0]["projectedExhaustionAt"] is not None

    names, total = await _all_pages(app)
    assert names == [f"e{i}" for i in range(6)] and total == 6
    names, total = await _all_pages(app, order={"field": "USED", "direction": "DESC", "pool": "ai"})
    assert names == ["e1", "e2", "e0", "e3", "e4", "e5"] and total == 6
    names, _ = await _all_pages(app, order={"field": "REMAINING", "pool": "ai"})
    assert names == ["e2", "e5", "e3", "e1", "e0", "e4"]
    names, _ = await _all_pages(app, order={"field": "PROJECTED_EXHAUSTION", "pool": "ai"})
    assert names == ["e2", "e1", "e0", "e3", "e4", "e5"]  # e5 uses nothing: last
    names, total = await _all_pages(app, filter={"pool": "ai", "status": ["LOW", "EXHAUSTED"]})
    assert names == ["e1", "e2", "e3"] and total == 3
    names, total = await _all_pages(app, filter={"pool": "ai", "status": ["NO_ALLOCATION"]})
    assert names == ["e5"] and total == 1
    names, _ = await _all_pages(
        app,
        filter={"pool": "ai", "status": ["OK", "LOW"]},
        order={"field": "PROJECTED_EXHAUSTION", "direction": "DESC"},
    )
    assert names == ["e4", "e3", "e0", "e1"]
    codes = await _errors(
        app, PAGE_QUERY, id=str(app), after="bm9wZQ==", order={"field": "USED", "pool": "ai"}
    )
    assert codes == ["VALIDATION"]


# ---------------------------------------------------------------- the dashboard, counted


DASHBOARD_STATEMENTS = 6


async def _bulk_end_users(app: int, count: int) -> None:
    """`count` more End Users with an empty balance in every pool, set-based (the counters
    stay equal to the ledger: nothing was allocated to them)."""

    async def work(db: Sql) -> None:
        await db.run(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $2)"
            " INSERT INTO end_user (application_id, external_id, created_at)"
            " SELECT $1, 'bulk-' || CAST(n AS VARCHAR(12)), now() FROM g",
            app,
            count,
        )
        await db.run(
            "INSERT INTO end_user_balance (end_user_id, pool_id, allocated, used, expired,"
            " remaining, status, version, updated_at) SELECT e.id, p.id, 0, 0, 0, 0,"
            " 'EXHAUSTED', 0, now() FROM end_user e JOIN credit_pool p"
            " ON p.application_id = e.application_id"
            " WHERE e.application_id = $1 AND e.external_id LIKE 'bulk-%'",
            app,
        )

    await transaction(work)


async def _dashboard_statements(app: int) -> tuple[list[str], dict[str, Any]]:
    now = datetime.now(UTC)
    variables = {
        "id": str(app),
        "from": (now - timedelta(days=90)).isoformat(),
        "to": now.isoformat(),
    }
    with counting() as statements:
        data = await _execute(app, DASHBOARD, **variables)
    # (no reset statement either: api.database.PooledConnection)
    return statements, data


async def test_dashboard_statement_count_does_not_grow_with_end_users(backend: Backend) -> None:
    small, _ = await application_with_allocations(10)
    large, _ = await application_with_allocations(10)
    for app in (small, large):
        for i in range(10):
            await consume_credits(
                app,
                "ai",
                EndUserRef(external_id=f"u{i}"),
                i + 1,
                FEATURES[i % 2],
                occurred_at=datetime.now(UTC) - timedelta(days=i * 5, hours=i),
            )
    await _bulk_end_users(large, 10_000)
    few, few_data = await _dashboard_statements(small)
    many, many_data = await _dashboard_statements(large)
    assert len(few_data["application"]["endUsers"]["edges"]) == 10
    assert len(many_data["application"]["endUsers"]["edges"]) == 50
    assert many_data["application"]["allocationSummary"]["endUsersTotal"] == 10_010
    buckets = many_data["application"]["pools"][0]["consumption"]["buckets"]
    assert len(buckets) == 91
    assert len(few) == len(many), "\n".join(many)
    # the application with its pools and their packs, series, the summary with its two
    # rankings, the End User page with its count, their balances with burn rates, and the
    # request log
    assert len(many) == DASHBOARD_STATEMENTS, "\n".join(many)
    assert await verify_ledger() == []


_SUMMARY_WITH_RANKINGS = """
query($id: ID!, $n: Int!) { application(id: $id) { allocationSummary(pool: "ai") {
  endUsersTotal withCredits low exhausted remaining burnRatePerDay projectedShortfall
  top: topConsumers(first: 3)INCLUDE { used remaining endUser { externalId } }
  more: topConsumers(first: 7)INCLUDE { used endUser { externalId } }
  ... on AllocationSummary { closeToRunningOut(first: $n)INCLUDE {
    remaining burnRatePerDay projectedExhaustionAt endUser { externalId } } }
} } }"""


async def test_the_summary_reads_its_rankings_with_its_figures(
    backend: Backend, frozen_now: datetime
) -> None:
    """A summary's rankings (aliases, fragments and variables included) come with its
    figures in one statement, answering as when each ranking reads its own (a directive on
    the way leaves them to their loader)."""
    app, _ = await application_with_allocations(10)
    for i in range(10):
        await consume_credits(app, "ai", EndUserRef(external_id=f"u{i}"), i + 1, FEATURES[i % 2])
    await fold_usage()
    for i in range(0, 10, 3):  # changed since the fold: taken live
        await consume_credits(app, "ai", EndUserRef(external_id=f"u{i}"), 5, FEATURES[0])
    together = _SUMMARY_WITH_RANKINGS.replace("INCLUDE", "")
    apart = _SUMMARY_WITH_RANKINGS.replace("INCLUDE", " @include(if: true)")
    for n in (0, 4, 10):
        with counting() as joined:
            data = await _execute(app, together, id=str(app), n=n)
        with counting() as separate:
            expected = await _execute(app, apart, id=str(app), n=n)
        assert data == expected
        assert len(joined) == len(separate) - 1, "\n".join(joined)
        ranked = data["application"]["allocationSummary"]
        assert len(ranked["top"]) == 3 and len(ranked["more"]) == 7
        assert len(ranked["closeToRunningOut"]) == n
        assert ranked["more"][:3] == [{k: e[k] for k in ("used", "endUser")} for e in ranked["top"]]


async def test_the_dashboard_answers_the_same_without_the_fast_path(
    backend: Backend, frozen_now: datetime
) -> None:
    """resolvers/runtime/plain_lists.py completes its plain lists (buckets, balances, log
    entries)."""
    app, _ = await application_with_allocations(10)
    for i in range(10):
        await consume_credits(app, "ai", EndUserRef(external_id=f"u{i}"), i + 1, FEATURES[i % 2])
    await fold_usage()
    normal = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)
    assert schema.execution_context_class is PlainListExecutor
    now = datetime.now(UTC)
    variables = {
        "id": str(app),
        "from": (now - timedelta(days=9)).isoformat(),
        "to": now.isoformat(),
    }
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    answers = [
        await each.execute(
            DASHBOARD, variable_values=variables, context_value=Context(None, None, principal)
        )
        for each in (schema, normal)
    ]
    assert answers[0].errors is None and answers[1].errors is None
    assert answers[0].data == answers[1].data
    assert len(answers[0].data["application"]["endUsers"]["edges"]) == 10


async def test_an_exhaustion_past_the_calendar_is_null_on_every_path(
    backend: Backend, frozen_now: datetime
) -> None:
    """An End User holding many credits and using one a week projects past the year 9999:
    its exhaustion is null (and its burn rate still answered), on the fast path, the
    database-written one and the stock one alike."""
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "far")).id
    await purchase_credits(app, "ai", 1_000_000_000)
    (row,) = await upsert_end_users(app, [EndUserInput("patient")])
    await allocate_credits(app, "ai", EndUserRef(id=row.id), 1_000_000_000)
    await consume_credits(app, "ai", EndUserRef(id=row.id), 1, "ai_generation")
    query = """query($id: ID!) { application(id: $id) { endUsers(first: 5) { edges { node {
      externalId balances { pool remaining burnRatePerDay projectedExhaustionAt } } } } } }"""
    normal = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    answers = []
    for each, preserialized in ((schema, True), (schema, False), (normal, False)):
        context = Context(None, None, principal, preserialized=preserialized)
        result = await each.execute(query, variable_values={"id": str(app)}, context_value=context)
        assert result.errors is None, result.errors
        answers.append(orjson.loads(encode_json(result.data)))  # as a client decodes it
    assert answers[0] == answers[1] == answers[2]
    (ai, _) = answers[0]["application"]["endUsers"]["edges"][0]["node"]["balances"]
    assert ai["remaining"] == 999_999_999 and ai["burnRatePerDay"] > 0
    assert ai["projectedExhaustionAt"] is None


@pytest.mark.parametrize("preserialized", [False, True], ids=["in process", "over HTTP"])
async def test_a_dashboard_leaves_no_reference_cycles(
    backend: Backend, preserialized: bool
) -> None:
    """An answer's objects (buckets, balances, End Users, loader caches, selections read by
    the preserialized writers) are freed with the request, in process and as an HTTP
    answer is made. Left in reference cycles, a dashboard's hundreds of objects would wait
    for the cyclic collector, whose long collections pause the server under load."""
    app, _ = await application_with_allocations(10)
    for i in range(10):
        await consume_credits(app, "ai", EndUserRef(external_id=f"u{i}"), i + 1, FEATURES[i % 2])
    await fold_usage()
    now = datetime.now(UTC)
    variables = {
        "id": str(app),
        "from": (now - timedelta(days=9)).isoformat(),
        "to": now.isoformat(),
    }
    # warm: plans, caches, connections
    await _execute(app, DASHBOARD, preserialized=preserialized, **variables)
    gc.collect()
    gc.disable()
    flags = gc.get_debug()
    try:
        for _ in range(3):
            data = await _execute(app, DASHBOARD, preserialized=preserialized, **variables)
        assert encode_json(data).count(b'"externalId"') >= 10
        del data
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep what a collection finds, to name it
        gc.collect()
        found = Counter(f"{type(each).__module__}.{type(each).__qualname__}" for each in gc.garbage)
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        gc.enable()
    assert not found, found


async def test_concurrent_folds_and_consumptions_keep_series_exact(backend: Backend) -> None:
    app, users = await application_with_allocations(3)
    now = datetime.now(UTC)

    async def consume(i: int) -> None:
        await consume_credits(
            app,
            "ai",
            EndUserRef(id=users[i % 3]),
            1 + i % 5,
            FEATURES[i % 2],
            occurred_at=now - timedelta(hours=i % 50),
        )

    work = [consume(i) for i in range(40)] + [fold_usage() for _ in range(6)]
    await asyncio.gather(*work)
    await asyncio.gather(fold_usage(), fold_usage())
    buckets = bucket_range(now - timedelta(days=3), now + timedelta(hours=1), Granularity.HOUR)
    sums = await _ledger_sums(app, buckets.start, buckets.end)
    pools = await _pool_ids(app)
    (series,) = await consumption_series([SeriesKey(app, buckets, pool_id=pools["ai"])])
    assert series.total_used == sums[("used", pools["ai"])] == sum(1 + i % 5 for i in range(40))
    await _check_burn(app, users)
    # the billing rollups too: each entry counted once, whether folded or in the tail
    period = await billing_period(app, month_start(datetime.now(UTC)))
    assert period is not None
    (ai,) = [pool for pool in period.pools if pool.pool == "ai"]
    assert ai.used == sum(1 + i % 5 for i in range(40)) and ai.active_end_users == 3
    assert await verify_ledger() == []
