"""Consumption series: ledger sums in contiguous UTC buckets (HOUR, DAY, WEEK from Monday,
MONTH), empty buckets included, for pools or End Users.

The range is widened to whole buckets (`from` rounded down, `to` up to a bucket boundary),
and every entry is counted in the bucket its `occurred_at` falls in, so Σ used over the
buckets equals the CONSUME entries of that range exactly. Pool series read the hourly
rollup (HOUR) or the daily one (DAY, WEEK, MONTH: whole UTC days) plus the unfolded tail
of the ledger (`models.rollups`); End User series read the End User's own ledger entries.

Per bucket: `used` (CONSUME, narrowed by the feature when one is given), `expired`
(EXPIRE) and `purchased` (PURCHASE for a pool; for an End User, the credits allocated to
it, net of releases), each by `occurred_at`; and `remaining`, the balance as the ledger
stood at the bucket's end: the counters now, less the changes booked (`created_at`) after
the bucket. A consumption reported late (`occurredAt` in the past) counts in the `used`
of the bucket it occurred in but lowers `remaining` only from when it was booked, so
`remaining` never dips under zero for credits bought or allocated later, and the last
bucket (any bucket ending after now) is the live balance. Booking time is the writing
transaction's start: a consumption that started before the allocation it drew from had
committed (it waited for that balance's lock) is booked a few milliseconds before it; a
bucket ending in between would read under zero, and shows 0.

Spikes: a bucket is a spike when its `used` exceeds median + max(3·sigma, median, 1), where
median and sigma = 1.4826·MAD (median absolute deviation, the robust sigma of a normal series) are
taken over the whole series' `used`. The `median` floor means a spike is at least twice
the typical bucket (a flat or gently noisy series never flags), and series shorter than
`MIN_SPIKE_BUCKETS` never flag."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from itertools import accumulate
from operator import sub
from typing import Any, cast

from models import folded_sums
from models.balance_rules import pool_remaining_sql
from models.errors import ValidationFailed
from models.folded_sums import Version
from models.rollups import in_tail
from models.sql import Row, Sql, single_statement

MAX_BUCKETS = 10_000
MIN_SPIKE_BUCKETS = 5
SPIKE_SIGMAS = 3.0
MAD_TO_SIGMA = 1.4826


class Granularity(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


_WIDTH = {
    Granularity.HOUR: timedelta(hours=1),
    Granularity.DAY: timedelta(days=1),
    Granularity.WEEK: timedelta(weeks=1),
}


def bucket_floor(moment: datetime, granularity: Granularity) -> datetime:
    """The start of the UTC bucket holding `moment` (weeks start on Monday)."""
    moment = moment.astimezone(UTC)
    hour = moment.replace(minute=0, second=0, microsecond=0)
    if granularity == Granularity.HOUR:
        return hour
    day = hour.replace(hour=0)
    if granularity == Granularity.DAY:
        return day
    if granularity == Granularity.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_bucket(start: datetime, granularity: Granularity) -> datetime:
    if granularity != Granularity.MONTH:
        return start + _WIDTH[granularity]
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def _month_number(moment: datetime) -> int:
    return moment.year * 12 + moment.month - 1


@dataclass(frozen=True, slots=True)
class BucketRange:
    """Whole buckets from `start` (inclusive) to `end` (exclusive)."""

    granularity: Granularity
    start: datetime
    end: datetime
    count: int

    def starts(self) -> list[datetime]:
        if self.granularity != Granularity.MONTH:
            width = _WIDTH[self.granularity]
            return [self.start + i * width for i in range(self.count)]
        result = [self.start]
        for _ in range(self.count - 1):
            result.append(next_bucket(result[-1], self.granularity))
        return result


def bucket_range(start: datetime, end: datetime, granularity: Granularity) -> BucketRange:
    """Validates a requested range and widens it to whole buckets: timezone-aware bounds,
    `from` before `to`, at most MAX_BUCKETS buckets."""
    for value, field in ((start, "from"), (end, "to")):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationFailed(f"{field} must carry a time zone (e.g. ...Z)", field=field)
    if start >= end:
        raise ValidationFailed("from must be before to", field="from")
    first = bucket_floor(start, granularity)
    last = bucket_floor(end, granularity)
    if last < end.astimezone(UTC):
        last = next_bucket(last, granularity)
    if granularity == Granularity.MONTH:
        count = _month_number(last) - _month_number(first)
    else:
        count = (last - first) // _WIDTH[granularity]
    if count > MAX_BUCKETS:
        raise ValidationFailed(
            f"the range holds {count:,} {granularity.value} buckets; at most {MAX_BUCKETS:,}",
            field="to",
        )
    return BucketRange(granularity, first, last, count)


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    used: int
    expired: int
    purchased: int
    remaining: int
    spike: bool


@lru_cache(maxsize=64)  # a dashboard's range stays the same all day
def iso_starts(buckets: BucketRange) -> tuple[str, ...]:
    """The buckets' starts as `datetime.isoformat` writes them."""
    return tuple(start.isoformat() for start in buckets.starts())


@dataclass(frozen=True, slots=True)
class Series:
    """A series as columns, one value per bucket of `range` in each."""

    range: BucketRange
    used: list[int]
    expired: list[int]
    purchased: list[int]
    remaining: list[int]
    spike: list[bool]
    # what the API made of this series, by what was asked of it (resolvers/consumption.py):
    # a series read again unchanged is not written again
    rendered: dict[Hashable, Any] = dataclass_field(default_factory=dict, compare=False, repr=False)

    @property
    def granularity(self) -> Granularity:
        return self.range.granularity

    @property
    def buckets(self) -> list[Bucket]:
        columns = (self.used, self.expired, self.purchased, self.remaining, self.spike)
        return [
            Bucket(start, *values)
            for start, *values in zip(self.range.starts(), *columns, strict=True)
        ]

    @property
    def total_used(self) -> int:
        return sum(self.used)

    @property
    def total_expired(self) -> int:
        return sum(self.expired)


def spikes(used: Sequence[int]) -> list[bool]:
    """The spike rule of this module's docstring."""
    if len(used) < MIN_SPIKE_BUCKETS:
        return [False] * len(used)
    median = _median(sorted(used))
    sigma = MAD_TO_SIGMA * _median(sorted([abs(value - median) for value in used]))
    threshold = median + max(SPIKE_SIGMAS * sigma, median, 1)
    return [value > threshold for value in used]


def _median(ordered: list[Any]) -> Any:
    """`statistics.median` of values already in order."""
    half = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[half]
    return (ordered[half - 1] + ordered[half]) / 2


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """What one series covers: a pool (None: every pool of the application, summed) or an
    End User's balances (in that pool, or in all), narrowed to a feature or not."""

    application_id: int
    range: BucketRange
    pool_id: int | None = None
    end_user_id: int | None = None
    feature: str | None = None

    @property
    def group(self) -> tuple[Any, ...]:
        """Keys with the same group are computed by one statement."""
        return (self.application_id, self.range, self.feature, self.end_user_id is not None)


def _index_sql(db: Sql, key: SeriesKey, column: str, start: str) -> str:
    """SQL for the index of the bucket holding `column`, `start` being the range start."""
    granularity = key.range.granularity
    if granularity == Granularity.MONTH:
        if db.postgres:
            utc = f"({column} AT TIME ZONE 'UTC')"
            number = f"(CAST(extract(year FROM {utc}) AS BIGINT) * 12 + CAST(extract(month FROM {utc}) AS BIGINT) - 1)"  # noqa: E501
        else:
            number = (
                f"(CAST(strftime('%Y', {column}) AS INTEGER) * 12"
                f" + CAST(strftime('%m', {column}) AS INTEGER) - 1)"
            )
        return f"({number} - {start})"
    width = int(_WIDTH[granularity].total_seconds())
    if not db.postgres:
        return f"((CAST(strftime('%s', {column}) AS INTEGER) - {start}) / {width})"
    # Whole days and hours by date arithmetic: PostgreSQL's epoch is a NUMERIC, and taking
    # its floor cost a sixth of a pool series' statement. (The range starts on a bucket
    # boundary and holds no value before it: every division is exact or of a value >= 0.)
    utc = f"({column} AT TIME ZONE 'UTC')"
    units = f"(CAST({utc} AS DATE) - DATE '1970-01-01')"
    unit = int(_WIDTH[Granularity.DAY].total_seconds())
    if granularity == Granularity.HOUR:
        units = f"({units} * 24 + CAST(date_part('hour', {utc}) AS BIGINT))"
        unit = width
    return f"(({units} - CAST({start} AS BIGINT) / {unit}) / {width // unit})"


def _range_origin(key: SeriesKey) -> int:
    if key.range.granularity == Granularity.MONTH:
        return _month_number(key.range.start)
    return int(key.range.start.timestamp())


# Per fact row: used of the feature asked, expired, purchased (by occurredAt), booked
# (the change of remaining, by createdAt).
_AFTER = -1  # facts after the range: only what they booked matters (remaining)
_NOW = -2  # the counters' remaining now
# What a pool series' row holds: sums of the rollups, of the tail (or the counters now), or
# the rollup state's version (owner and bucket).
_FOLDED, _LIVE, _VERSION = 0, 1, 2
# The entries that change a pool's remaining, and an End User's.
_POOL_KINDS = "('CONSUME', 'EXPIRE', 'PURCHASE')"
_END_USER_KINDS = "('CONSUME', 'EXPIRE', 'ALLOCATE', 'RELEASE')"


async def _pool_rows(db: Sql, keys: list[SeriesKey], kept: tuple[int, int]) -> list[Row]:
    """One statement for every pool series of a group: sums per (pool, bucket), each row
    marked as the rollups' (FOLDED) or the tail's (LIVE). On PostgreSQL the rollups are
    read only when the rollup state's version is not `kept`, and a last row (VERSION) gives
    the version the statement saw (`models.folded_sums`)."""
    head = keys[0]
    all_pools = any(key.pool_id is None for key in keys)
    args: list[Any] = [head.range.start, head.range.end, _range_origin(head)]
    if all_pools:
        args.append(head.application_id)
        pools = "(SELECT id FROM credit_pool WHERE application_id = $4)"
    else:
        ids = sorted({key.pool_id for key in keys if key.pool_id is not None})
        marks = ",".join(f"${len(args) + 1 + i}" for i in range(len(ids)))
        args += ids
        pools = f"({marks})"
    feature_match = "1 = 1"
    if head.feature is not None:
        args.append(head.feature)
        feature_match = f"f.feature = ${len(args)}"
    gate = ""
    if db.postgres:
        args += kept
        gate = f" AND NOT {folded_sums.unchanged(f'${len(args) - 1}', f'${len(args)}')}"
    index = _index_sql(db, head, "f.at", "$3")
    # Buckets of a day or more are whole UTC days: the daily rollup holds them.
    table, at = (
        ("usage_rollup", "hour")
        if head.range.granularity == Granularity.HOUR
        else ("usage_rollup_day", "day")
    )
    # Two kinds of fact rows: usage at its `occurred_at` (used, expired, purchased) and
    # the change of remaining at its booking time, `created_at` (booked).
    statement = (
        "WITH f AS ("
        f" SELECT {_FOLDED} AS source, r.pool_id, r.{at} AS at, r.feature, r.used, r.expired,"
        f" r.purchased, r.booked FROM {table} r WHERE r.pool_id IN {pools} AND r.{at} >= $1"
        f"{gate}"
        " UNION ALL"
        f" SELECT {_LIVE}, l.pool_id, l.occurred_at,"
        " CASE WHEN l.kind = 'CONSUME' THEN COALESCE(l.feature, '') ELSE '' END,"
        " CASE WHEN l.kind = 'CONSUME' THEN -l.amount ELSE 0 END,"
        " CASE WHEN l.kind = 'EXPIRE' THEN -l.amount ELSE 0 END,"
        " CASE WHEN l.kind = 'PURCHASE' THEN l.amount ELSE 0 END, 0"
        f" FROM ledger_entry l WHERE l.pool_id IN {pools} AND {in_tail('l')}"
        f" AND l.occurred_at >= $1 AND l.kind IN {_POOL_KINDS}"
        " UNION ALL"
        f" SELECT {_LIVE}, l.pool_id, l.created_at, '', 0, 0, 0, l.amount"
        f" FROM ledger_entry l WHERE l.pool_id IN {pools} AND {in_tail('l')}"
        f" AND l.created_at >= $1 AND l.kind IN {_POOL_KINDS})"
        f" SELECT f.pool_id AS owner, CASE WHEN f.at >= $2 THEN {_AFTER} ELSE {index} END"
        # (as BIGINT: PostgreSQL sums BIGINTs as NUMERIC, decoded into slow Decimals)
        " AS bucket,"
        f" CAST(SUM(CASE WHEN {feature_match} THEN f.used ELSE 0 END) AS BIGINT) AS used,"
        " CAST(SUM(f.expired) AS BIGINT) AS expired,"
        " CAST(SUM(f.purchased) AS BIGINT) AS purchased,"
        " CAST(SUM(f.booked) AS BIGINT) AS booked, f.source FROM f GROUP BY 1, 2, f.source"
        f" UNION ALL SELECT id, {_NOW}, 0, 0, 0, {pool_remaining_sql()}, {_LIVE}"
        f" FROM credit_pool WHERE id IN {pools}"
    )
    if db.postgres:
        statement += f" UNION ALL {folded_sums.version_row('0, 0, 0, 0', str(_VERSION))}"
    # (the rollups' (pool, bucket) index serves every pool alike: planned once)
    return await db.records(statement, *args, planned_once=True)


async def _end_user_rows(db: Sql, keys: list[SeriesKey]) -> list[Row]:
    """One statement for every End User series of a group: sums per (End User, pool,
    bucket), from the End Users' ledger entries."""
    head = keys[0]
    ids = sorted({key.end_user_id for key in keys if key.end_user_id is not None})
    args: list[Any] = [head.range.start, head.range.end, _range_origin(head), head.application_id]
    marks = ",".join(f"${len(args) + 1 + i}" for i in range(len(ids)))
    args += ids
    feature_match = "1 = 1"
    if head.feature is not None:
        args.append(head.feature)
        feature_match = f"l.feature = ${len(args)}"
    occurred = _index_sql(db, head, "l.occurred_at", "$3")
    booked = _index_sql(db, head, "l.created_at", "$3")
    mine = f"l.end_user_id IN ({marks}) AND l.application_id = $4 AND l.kind IN {_END_USER_KINDS}"
    statement = (
        "SELECT l.end_user_id AS owner, l.pool_id,"
        f" CASE WHEN l.occurred_at >= $2 THEN {_AFTER} ELSE {occurred} END AS bucket,"
        # (sums as BIGINT: PostgreSQL sums BIGINTs as NUMERIC, decoded into slow Decimals)
        " CAST(SUM(CASE WHEN l.kind = 'CONSUME' AND"
        f" {feature_match} THEN -l.amount ELSE 0 END) AS BIGINT) AS used,"
        " CAST(SUM(CASE WHEN l.kind = 'EXPIRE' THEN -l.amount ELSE 0 END) AS BIGINT) AS expired,"
        " CAST(SUM(CASE WHEN l.kind IN ('ALLOCATE', 'RELEASE') THEN l.amount ELSE 0 END)"
        f" AS BIGINT) AS purchased, 0 AS booked FROM ledger_entry l WHERE {mine}"
        " AND l.occurred_at >= $1 GROUP BY 1, 2, 3"
        # the change of remaining at its booking time
        " UNION ALL SELECT l.end_user_id, l.pool_id,"
        f" CASE WHEN l.created_at >= $2 THEN {_AFTER} ELSE {booked} END, 0, 0, 0,"
        f" CAST(SUM(l.amount) AS BIGINT) FROM ledger_entry l WHERE {mine} AND l.created_at >= $1"
        " GROUP BY 1, 2, 3"
        f" UNION ALL SELECT end_user_id, pool_id, {_NOW}, 0, 0, 0, remaining"
        f" FROM end_user_balance WHERE end_user_id IN ({marks})"
    )
    return await db.records(statement, *args)


# A fact of a series: (bucket, used, expired, purchased, booked), bucket _AFTER or _NOW too.
Fact = tuple[int, int, int, int, int]


def _assemble(key: SeriesKey, facts: Sequence[Fact]) -> Series:
    count = key.range.count
    used = [0] * count
    expired = [0] * count
    purchased = [0] * count
    booked = [0] * count  # the change of remaining the ledger booked in each bucket
    booked_after = 0
    remaining_now = 0
    for bucket, bucket_used, bucket_expired, bucket_purchased, bucket_booked in facts:
        if bucket >= 0:
            used[bucket] += bucket_used
            expired[bucket] += bucket_expired
            purchased[bucket] += bucket_purchased
            booked[bucket] += bucket_booked
        elif bucket == _NOW:
            remaining_now += bucket_booked
        else:
            booked_after += bucket_booked
    # the level at each bucket's end, from the last back: as the ledger stood at the range's
    # end, less what each later bucket booked (never under 0: see the module's docstring on
    # transactions in flight)
    levels = list(accumulate(reversed(booked), sub, initial=remaining_now - booked_after))
    remaining = [level if level > 0 else 0 for level in reversed(levels[:count])]
    return Series(key.range, used, expired, purchased, remaining, spikes(used))


def _end_user_facts(rows: list[Row]) -> dict[tuple[int, int], list[Fact]]:
    """An End User series statement's rows as facts, by (End User, pool). (A row's values
    in order: End User, pool, then the fact's columns, every one an integer as the
    statement casts them.)"""
    found: dict[tuple[int, int], list[Fact]] = defaultdict(list)
    for row in rows:
        values = tuple(row.values())
        found[values[0], values[1]].append(values[2:])  # type: ignore[arg-type]
    return found


# The rollups' sums a pool series statement read, by what it asked, until the next fold.
_KEPT_SUMS = folded_sums.FoldedSums()
# Pool series as assembled, by key, with the rollup state's version their folded facts were
# read at and their live facts (the tail's and the counters'): a series is a function of
# those, so one whose live facts are as they were is the series assembled then.
_ASSEMBLED = folded_sums.FoldedSums(64)
# Only series of at most this many buckets are kept, their rollup sums included (a
# dashboard's 90 days, a month of hours): the longest ranges would hold megabytes each.
KEPT_BUCKETS = 1_000


async def _pool_facts(
    members: list[SeriesKey],
) -> tuple[dict[tuple[int, int], list[Fact]], dict[tuple[int, int], list[Fact]], Version | None]:
    """The facts of a group of pool series, by (pool, pool): the rollups' as kept since the
    last fold, or read and kept, and the live ones, the tail's and the counters'
    (`_pool_rows`); and the rollup state's version the rollups' are of (None on SQLite)."""
    head = members[0]
    every_pool = any(k.pool_id is None for k in members)
    pools = None if every_pool else frozenset(k.pool_id for k in members)
    key = (head.application_id, head.range, head.feature, pools)
    kept, kept_facts = _KEPT_SUMS.kept(key)
    rows = await single_statement(lambda db: _pool_rows(db, members, kept))
    folded: dict[tuple[int, int], list[Fact]] = defaultdict(list)
    found: dict[tuple[int, int], list[Fact]] = defaultdict(list)
    version = None
    for row in rows:
        owner, *values, source = row.values()
        if source == _VERSION:
            version = (owner, values[0])
        else:  # (a pool's row: its facts' columns, every one an integer as cast)
            (folded if source == _FOLDED else found)[owner, owner].append(tuple(values))  # type: ignore[arg-type]
    if version is not None:  # PostgreSQL: the rollups read now, or not read for `kept`
        if version == kept:
            folded = kept_facts
        elif head.range.count <= KEPT_BUCKETS:
            _KEPT_SUMS.put(key, version, folded)
    return folded, found, version


def _pool_series(
    key: SeriesKey, folded: list[Fact], live: list[Fact], version: Version | None
) -> Series:
    """The series of a pool key from its facts: the one assembled from the same facts
    before, when its rollup state's version and live facts are the same."""
    if version is None or key.range.count > KEPT_BUCKETS:
        return _assemble(key, [*folded, *live])
    kept_version, kept = _ASSEMBLED.kept(key)
    if kept_version == version and kept[0] == live:
        return cast(Series, kept[1])
    series = _assemble(key, [*folded, *live])
    _ASSEMBLED.put(key, version, (live, series))
    return series


async def consumption_series(keys: Sequence[SeriesKey]) -> list[Series]:
    """The series of each key, in order, in one statement per group of keys sharing a
    range, feature and kind (pool or End User): the statement count does not grow with
    the number of pools or End Users asked for."""
    groups: dict[tuple[Any, ...], list[SeriesKey]] = defaultdict(list)
    for key in keys:
        groups[key.group].append(key)
    found: dict[SeriesKey, Series] = {}
    for members in groups.values():
        if members[0].end_user_id is not None:
            rows = await single_statement(lambda db, m=members: _end_user_rows(db, m))
            facts = _end_user_facts(rows)
            for key in members:
                found[key] = _assemble(key, _facts_of(key, facts, by_end_user=True))
            continue
        folded, live, version = await _pool_facts(members)
        for key in members:
            found[key] = _pool_series(key, _facts_of(key, folded), _facts_of(key, live), version)
    return [found[key] for key in keys]


def _facts_of(
    key: SeriesKey, facts: dict[tuple[int, int], list[Fact]], by_end_user: bool = False
) -> list[Fact]:
    """The facts of `key` among a group's, by (owner, pool)."""
    return [
        fact
        for (owner, pool), owned in facts.items()
        if (not by_end_user or owner == key.end_user_id)
        and (key.pool_id is None or pool == key.pool_id)
        for fact in owned
    ]
