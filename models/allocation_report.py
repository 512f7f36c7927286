"""The End User allocation report: balances with burn rates, the per-pool summary, and End
User lists filtered by status and ordered by used, remaining or projected exhaustion.

Burn rate (docs/reporting.md#burn-rate-exhaustion-allocation-summary): the mean daily use over the
last 7 days, that is the credits used since the start of the UTC hour 7 days ago
(`models.rollups.window_start`) divided by the window's length in days (7 days and the part of the
current hour gone by). Projected exhaustion: now + remaining / burn rate; none when the burn rate
is 0.

Needs allocation: the projected use of the next 7 days that the End Users' own credits do
not cover, Σ max(0, 7 · burn rate - remaining) over the pool's End Users, is more than the
pool's unallocated credits. (An End User only consumes what it was allocated, so this is
what the pool will have to allocate in the next 7 days at the current pace.)

Every function answers in one statement, whatever the number of End Users."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

import orjson

from models import json_sql
from models.balance_report import (
    CHANGED,
    among_changed,
    borderline_end_users,
    changed_end_users,
    unchanged_since_fold,
)
from models.balance_rules import BalanceStatus, pool_remaining_sql
from models.errors import ValidationFailed
from models.kept_pages import KeptPages, marker_columns
from models.rollups import (
    END_USER_TOTAL,
    EXHAUSTION_KEY,
    HORIZON_DAYS,
    WINDOW_USED,
    tail_pools,
    window_start,
    window_used_joins,
    window_used_of,
)
from models.sql import Row, on_postgres, single_statement, written_or_plain

_MICROSECOND = timedelta(microseconds=1)


@lru_cache(maxsize=16)  # a request computes every burn at one `now`
def window_days(now: datetime) -> float:
    return (now - window_start(now)) / timedelta(days=1)


@lru_cache(maxsize=16)
def window_micros(now: datetime) -> int:
    """The burn window's length at `now` in microseconds."""
    return (now - window_start(now)) // _MICROSECOND


def burn_rate(window_used: int, now: datetime) -> float:
    return window_used / window_days(now)


def exhaustion_micros(window_used: int, remaining: int, span: int) -> int:
    """remaining / burn rate, the window being `span` microseconds long, in whole
    microseconds (remaining · span / window_used, halves rounded up): integer arithmetic,
    exact whatever the magnitudes, which PostgreSQL repeats (`_burn_values_sql`)."""
    return (remaining * span + window_used // 2) // window_used


def exhaustion_time(window_used: int, remaining: int, now: datetime) -> datetime | None:
    """None without use, or past the calendar's end (the year 9999)."""
    if window_used <= 0:
        return None
    micros = exhaustion_micros(window_used, remaining, window_micros(now))
    try:
        return now + timedelta(microseconds=micros)
    except OverflowError:
        return None


@dataclass(frozen=True, slots=True)
class Burn:
    """An End User's use over the burn window, and what it projects."""

    window_used: int
    remaining: int
    now: datetime

    @property
    def rate_per_day(self) -> float:
        return burn_rate(self.window_used, self.now)

    @property
    def exhaustion_at(self) -> datetime | None:
        return exhaustion_time(self.window_used, self.remaining, self.now)


@dataclass(frozen=True, slots=True)
class BalanceLine:
    """An End User's balance in one pool (zeros where it holds none) with its burn."""

    end_user_id: int
    pool_id: int
    pool_key: str
    allocated: int
    used: int
    expired: int
    remaining: int
    status: BalanceStatus
    version: int
    threshold: int | None
    burn: Burn


@dataclass(frozen=True, slots=True)
class EndUserLine:
    """An End User of a list, with its balance in the pool the list is about (if any)."""

    id: int
    application_id: int
    external_id: str
    name: str | None
    email: str | None
    created_at: datetime
    balance: BalanceLine | None
    sort_key: Any = None


def _balance_columns(window_used: str) -> str:
    """Columns of end_user_balance b (zeros where there is no row) and credit_pool p."""
    return (
        "COALESCE(b.allocated, 0) AS allocated, COALESCE(b.used, 0) AS used,"
        " COALESCE(b.expired, 0) AS expired, COALESCE(b.remaining, 0) AS remaining,"
        " COALESCE(b.status, 'NO_ALLOCATION') AS status, COALESCE(b.version, 0) AS version,"
        " COALESCE(b.low_balance_threshold, p.end_user_low_balance_threshold) AS threshold,"
        f" {window_used} AS window_used, p.key AS pool_key"
    )


_END_USER_COLUMNS = "e.id, e.application_id, e.external_id, e.name, e.email, e.created_at"


def _marks(first: int, count: int) -> str:
    return ",".join(f"${first + i}" for i in range(count))


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


_STATUSES = {status.value: status for status in BalanceStatus}  # (a lookup, not Enum's call)


def _balance(row: Row, end_user_id: int, pool_id: int, now: datetime) -> BalanceLine:
    return BalanceLine(
        end_user_id=end_user_id,
        pool_id=pool_id,
        pool_key=row["pool_key"],
        allocated=int(row["allocated"]),
        used=int(row["used"]),
        expired=int(row["expired"]),
        remaining=int(row["remaining"]),
        status=_STATUSES[row["status"]],
        version=int(row["version"]),
        threshold=None if row["threshold"] is None else int(row["threshold"]),
        burn=Burn(int(row["window_used"]), int(row["remaining"]), now),
    )


def _end_user(row: Row, pool_id: int | None, now: datetime) -> EndUserLine:
    return EndUserLine(
        id=row["id"],
        application_id=row["application_id"],
        external_id=row["external_id"],
        name=row["name"],
        email=row["email"],
        created_at=_datetime(row["created_at"]),
        balance=None if pool_id is None else _balance(row, row["id"], pool_id, now),
        sort_key=row.get("k"),
    )


async def balance_lines(
    end_user_ids: list[int], now: datetime, *, burn: bool = True
) -> dict[int, list[BalanceLine]]:
    """Each End User's balance in every pool of its application (pool order), with burn
    (without: a burn of 0, and no rollup read)."""
    if not end_user_ids:
        return {}
    ids = sorted(set(end_user_ids))
    marks = _marks(2 if burn else 1, len(ids))
    columns = _balance_columns(window_used_of("e.id", "p.id", "$1") if burn else "0")
    statement = (
        f"SELECT e.id AS end_user_id, p.id AS pool_id, {columns}"
        " FROM end_user e JOIN credit_pool p ON p.application_id = e.application_id"
        # the End Users' rows through the (end_user_id, pool_id) index, not a pool's scan
        " LEFT JOIN end_user_balance b ON b.end_user_id = e.id AND b.pool_id = p.id"
        f" AND b.end_user_id IN ({marks})"
        f" WHERE e.id IN ({marks}) ORDER BY e.id, p.id"
    )
    params = [window_start(now), *ids] if burn else ids
    rows = await single_statement(lambda db: db.records(statement, *params))
    found: dict[int, list[BalanceLine]] = {i: [] for i in ids}
    for row in rows:
        found[row["end_user_id"]].append(_balance(row, row["end_user_id"], row["pool_id"], now))
    return found


# A balance's plain fields as the API names them, and the columns of `_balance_columns`
# that hold them; the Int ones must fit 32 bits for the database to write them.
BALANCE_FIELD_COLUMNS = {
    "pool": "pool_key",
    "allocated": "allocated",
    "used": "used",
    "remaining": "remaining",
    "expired": "expired",
    "status": "status",
    "version": "version",
    "lowBalanceThreshold": "threshold",
}
# A balance's fields of its burn: the database writes a mark with the window's use and the
# remaining credits (control characters, which its JSON never holds raw), which the server
# replaces by the value (`write_burns`), so the two are computed by one code.
BURN_MARKS = {"burnRatePerDay": "R", "projectedExhaustionAt": "E"}
_UNFIT = "-"  # a balance JSON the database could not write (an Int beyond 32 bits)


# The parameters with which PostgreSQL writes burn values (`BurnSql`), by name: each one's
# value at a moment in UTC.
_BURN_PARAMS: dict[str, Callable[[datetime], Any]] = {
    # float8: the window's length in days (`window_days`)
    "days": window_days,
    # timestamp: the moment, without its offset
    "now": lambda now: now.replace(tzinfo=None),
    # int8: the moment's microseconds past its second
    "fraction": lambda now: now.microsecond,
    # int8: the window's length in microseconds (`window_micros`)
    "span": window_micros,
    # int8: the microseconds from the moment to the calendar's end
    "last": lambda now: (datetime.max - now.replace(tzinfo=None)) // _MICROSECOND,
}


def burn_params(names: Iterable[str], now: datetime) -> list[Any]:
    """The values of the burn parameters `names` at `now`, a moment in UTC."""
    return [_BURN_PARAMS[name](now) for name in names]


class BurnSql:
    """The parameters ($n) with which PostgreSQL writes the burn values (`_BURN_PARAMS`),
    each added by name with `param` where first used (a statement must use every one), so
    that a statement's text does not depend on the moment."""

    def __init__(self, param: Callable[[str], str]) -> None:
        self._param = param
        self._added: dict[str, str] = {}

    def _get(self, name: str) -> str:
        if name not in self._added:
            self._added[name] = self._param(name)
        return self._added[name]

    @property
    def days(self) -> str:
        return self._get("days")

    @property
    def now(self) -> str:
        return self._get("now")

    @property
    def fraction(self) -> str:
        return self._get("fraction")

    @property
    def span(self) -> str:
        return self._get("span")

    @property
    def last(self) -> str:
        return self._get("last")


# The balances whose burn values PostgreSQL writes: a use of less than 10^15 credits (its
# rate is then below 10^15, which PostgreSQL's shortest float text spells as orjson does,
# digits and all, bar the ".0" of a whole number) and up to 10^7 remaining (remaining ·
# span then fits 64 bits). The others come as marks.
_BURN_WRITTEN = "x.window_used BETWEEN 0 AND 999999999999999 AND x.remaining BETWEEN 0 AND 10000000"


def _burn_values_sql(kind: str, burn: BurnSql) -> str:
    """The JSON text of a burn value on the row x, as `write_burns` would write it: the rate
    `burn_rate` (a float8 division, as Python's), the exhaustion moment `exhaustion_time`
    (`exhaustion_micros` in int8 arithmetic, added to the moment in whole days and
    microseconds, each exact in the interval's float8 factor; the timestamp's own text,
    cheaper than `to_char`)."""
    mark = _burn_mark(kind)
    if kind == "R":
        rate = f"(x.window_used::float8 / {burn.days}::float8)::text"
        value = f"{rate} || CASE WHEN strpos({rate}, '.') = 0 THEN '.0' ELSE '' END"
        return f"CASE WHEN NOT ({_BURN_WRITTEN}) THEN {mark} ELSE {value} END"
    micros = f"((x.remaining * {burn.span}::int8 + x.window_used / 2) / x.window_used)"
    moment = (
        f"({burn.now}::timestamp + interval '1 day' * ({micros} / 86400000000)"
        f" + interval '1 microsecond' * ({micros} % 86400000000))"
    )
    # a timestamp's text in the ISO DateStyle (api/database.py) is isoformat's with a space
    # for the T and its fraction's trailing zeros dropped (all of it on a whole second)
    text = f"replace({moment}::text, ' ', 'T')"
    return (
        f"CASE WHEN NOT ({_BURN_WRITTEN}) THEN {mark}"
        # (apart: a CASE tests in order, an OR in any, and 0 must not divide)
        f" WHEN x.window_used = 0 THEN 'null' WHEN {micros} > {burn.last}::int8 THEN 'null'"
        f" WHEN ({burn.fraction}::int8 + {micros}) % 1000000 = 0"
        f" THEN '\"' || {text} || '+00:00\"'"
        f" ELSE '\"' || rpad({text}, 26, '0') || '+00:00\"' END"
    )


def _burn_mark(kind: str) -> str:
    """A burn value's mark on the row x for `write_burns`: its kind, use and remaining."""
    return f"chr(30) || '{kind}' || x.window_used::text || ',' || x.remaining::text || chr(31)"


def _balance_value(field: str, burn: BurnSql | None = None) -> str:
    """The JSON text of a balance's `field` on the row x of `balances_json_sql`."""
    if field in BURN_MARKS:
        kind = BURN_MARKS[field]
        return _burn_mark(kind) if burn is None else _burn_values_sql(kind, burn)
    column = BALANCE_FIELD_COLUMNS[field]
    if column == "status":  # a BalanceStatus name, never null (`_balance_columns`)
        return json_sql.name_text("x.status")
    if column == "pool_key":  # text of the application's choosing: escaped
        return json_sql.json_text("x.pool_key")
    return f"COALESCE(x.{column}::text, 'null')"


# Whether the Ints of a balance on the row x (`_balance_columns`) fit 32 bits, as the
# database must check before writing its JSON.
_BALANCE_FITS = " AND ".join(
    f"COALESCE(x.{column} {json_sql.INT32}, TRUE)"
    for column in ("allocated", "used", "remaining", "expired", "version", "threshold")
)


def balances_json_sql(
    end_user: str,
    application: str,
    entries: tuple[tuple[str, str], ...],
    type_name: str,
    window_start: str | None = None,
    burn: BurnSql | None = None,
) -> str:
    """PostgreSQL: End User `end_user`'s balances in every pool of application
    `application` (SQL expressions), in pool order, as a JSON array of objects of `entries`
    (name in the answer, field of BALANCE_FIELD_COLUMNS or BURN_MARKS, or `__typename`
    answered `type_name`): a scalar subquery answering the JSON text, or _UNFIT. Burn
    fields need the burn window's start, `window_start` (a parameter); they are written
    with `burn` where it can (`_burn_values_sql`), else come as marks for `write_burns`."""
    balance = json_sql.text_object(
        (
            name,
            json_sql.type_name_text(type_name)
            if field == "__typename"
            else _balance_value(field, burn),
        )
        for name, field in entries
    )
    fits = _BALANCE_FITS
    window_used, kept = "0", ""
    if window_start is not None:
        window_used = window_used_of(end_user, "p.id", window_start, tail_pools(application))
        kept = " OFFSET 0"  # (a subquery of its own: each window sum once, not once per use)
    return (
        f"(SELECT CASE WHEN bool_and({fits}) IS FALSE THEN '{_UNFIT}' ELSE"
        f" '[' || COALESCE(string_agg({balance}, ',' ORDER BY x.pool_id), '') || ']' END"
        f" FROM (SELECT p.id AS pool_id, {_balance_columns(window_used)} FROM credit_pool p"
        # (each balance by its key, in a subquery kept as one: a join lets the generic plan
        # take all of the End User's balances by bitmap and filter them, a tenth dearer)
        " LEFT JOIN LATERAL (SELECT b.allocated, b.used, b.expired, b.remaining, b.status,"
        " b.version, b.low_balance_threshold FROM end_user_balance b"
        f" WHERE b.end_user_id = {end_user} AND b.pool_id = p.id OFFSET 0) b ON TRUE"
        f" WHERE p.application_id = {application}{kept}) x)"
    )


def write_burns(texts: dict[int, str], now: datetime) -> dict[int, str]:
    """`texts` with the burn marks of `balances_json_sql` replaced by their values at `now`,
    as the general path serializes them (`burn_rate`, `exhaustion_time`: the same
    arithmetic, one window length for the page)."""
    if not any("\x1e" in text for text in texts.values()):
        return texts
    days, span = window_days(now), window_micros(now)
    # a UTC moment's ISO text is its naive one with the offset added, for less work
    utc = now.tzinfo is UTC
    start, offset = (now.replace(tzinfo=None), "+00:00") if utc else (now, "")
    # a balance's two marks carry the same use and remaining: both values are written at
    # the first of them (and End Users of one page often share them: no use)
    written: dict[str, tuple[str, str]] = {}
    # one pass over the page: the texts joined by a character their JSON never holds raw,
    # split at the marks into [text, kind, values, text, kind, values, ..., text]
    parts = _BURN_MARK.split("\x1d".join(texts.values()))
    for i in range(1, len(parts), 3):
        values = parts[i + 1]
        found = written.get(values)
        if found is None:
            used, remaining = values.split(",")
            window_used = int(used)
            rate = window_used / days
            at = "null"
            if window_used > 0:
                try:
                    micros = exhaustion_micros(window_used, int(remaining), span)
                    moment = start + timedelta(microseconds=micros)
                except OverflowError:  # past the calendar's end
                    pass
                else:
                    at = f'"{moment.isoformat()}{offset}"'
            found = written[values] = (orjson.dumps(rate).decode(), at)
        parts[i] = found[0] if parts[i] == "R" else found[1]
        parts[i + 1] = ""
    return dict(zip(texts, "".join(parts).split("\x1d"), strict=True))


# A burn mark of `_balance_value`: its kind (a letter of BURN_MARKS) and its values.
_BURN_MARK = re.compile("\x1e(.)([^\x1f]*)\x1f")


# ------------------------------------------------------------------------------- summary


@dataclass(frozen=True, slots=True)
class AllocationSummary:
    pool_id: int
    end_users_total: int
    with_allocation: int
    with_credits: int
    low: int
    exhausted: int
    allocated: int
    used: int
    remaining: int  # what End Users hold
    unallocated: int
    window_used: int
    shortfall: float  # Σ max(0, 7·burn - remaining)
    now: datetime

    @property
    def burn_rate_per_day(self) -> float:
        return self.window_used / window_days(self.now)

    @property
    def projected_use(self) -> float:
        return HORIZON_DAYS * self.burn_rate_per_day

    @property
    def needs_allocation(self) -> bool:
        return self.shortfall > self.unallocated


# Sums over rows of (allocated, remaining, status, window_used): live balances or report rows.
_COUNTS = (
    "COALESCE(SUM(CASE WHEN allocated > 0 THEN 1 ELSE 0 END), 0) AS with_allocation,"
    " COALESCE(SUM(CASE WHEN remaining > 0 THEN 1 ELSE 0 END), 0) AS with_credits,"
    " COALESCE(SUM(CASE WHEN status = 'LOW' THEN 1 ELSE 0 END), 0) AS low,"
    " COALESCE(SUM(CASE WHEN allocated > 0 AND remaining = 0 THEN 1 ELSE 0 END), 0)"
    " AS exhausted, COALESCE(SUM(window_used), 0) AS window_used"
)
_SUMMED = ("with_allocation", "with_credits", "low", "exhausted", "window_used")


_HORIZON = "CAST($4 AS DOUBLE PRECISION)"


def _shortfall(postgres: bool) -> str:
    """Σ max(0, h·window use - remaining) over rows of balances; on PostgreSQL a float summed
    in End User order, the same bits whichever way the rows were read."""
    order = " ORDER BY end_user_id" if postgres else ""
    return (
        f"COALESCE(SUM(CASE WHEN window_used * {_HORIZON} > remaining THEN window_used *"
        f" {_HORIZON} - remaining ELSE 0 END{order}), 0)"
    )


_LIVE_BALANCES = "lv"  # the CTE of `_live_balances`


def _live_balances(postgres: bool, changed: str = CHANGED) -> str:
    """The CTE `_LIVE_BALANCES`: the pool's balances of the End Users of CTE `changed`,
    live, with their window use, each flagged `changed` when among CHANGED (a summary's
    borderline End Users are not). A statement defines it once for its summary and
    rankings: each use of the window's subqueries would otherwise be a copy of them, which
    PostgreSQL sets up anew on every execution, run or not (most of a report's cost, on a
    pool whose End Users are unchanged since the fold)."""
    flag = "TRUE" if changed == CHANGED else among_changed("b.end_user_id", postgres)
    return (
        f"{_LIVE_BALANCES} AS (SELECT b.end_user_id, b.allocated, b.used, b.remaining,"
        f" b.status, {window_used_of('b.end_user_id', 'b.pool_id', '$3')} AS window_used,"
        f" {flag} AS changed FROM end_user_balance b WHERE b.pool_id = $2"
        f" AND {among_changed('b.end_user_id', postgres, changed)})"
    )


# The summary's columns: (name, SQL expression) in its SELECT's order; `xs` and `xl` are its
# sums over the changed End Users' report rows and live balances, `r` the pool's report.
_SUMMARY_SELECT = (
    ("total", END_USER_TOTAL.format("$1")),
    ("pool_allocated", "p.allocated"),
    ("pool_used", "p.used"),
    ("held", "p.end_user_remaining"),
    ("unallocated", f"{pool_remaining_sql('p.')} - p.end_user_remaining"),
    *((n, f"COALESCE(r.{n}, 0) - xs.{n} + xl.{n}") for n in _SUMMED),
    ("short_window_used", "COALESCE(r.short_window_used, 0) - xs.short_window_used"),
    ("short_remaining", "COALESCE(r.short_remaining, 0) - xs.short_remaining"),
    ("shortfall", "xl.shortfall"),
)


def _summary_parts(postgres: bool, changed: str) -> tuple[str, str]:
    """The summary's CTEs (xl, xs) and its SELECT of `_SUMMARY_SELECT` ($1 application,
    $2 pool, $3 window start, $4 horizon factor), the changed End Users (borderline ones
    included) being CTE `changed` and their live balances CTE `_LIVE_BALANCES`."""
    ctes = (
        # ($4, the horizon factor, typed: PostgreSQL would infer window_used's BIGINT)
        f"xl AS (SELECT {_COUNTS}, {_shortfall(postgres)} AS shortfall"
        f" FROM {_LIVE_BALANCES} live),"
        f" xs AS (SELECT {_COUNTS},"
        " COALESCE(SUM(CASE WHEN shortfall_class = 1 THEN window_used ELSE 0 END), 0)"
        " AS short_window_used,"
        " COALESCE(SUM(CASE WHEN shortfall_class = 1 THEN remaining ELSE 0 END), 0)"
        " AS short_remaining FROM balance_report"
        f" WHERE pool_id = $2 AND {among_changed('end_user_id', postgres, changed)})"
    )
    columns = ", ".join(f"{sql} AS {name}" for name, sql in _SUMMARY_SELECT)
    select = (
        f"SELECT {columns} FROM credit_pool p LEFT JOIN pool_report r ON r.pool_id = p.id"
        " CROSS JOIN xl CROSS JOIN xs WHERE p.id = $2"
    )
    return ctes, select


@lru_cache(maxsize=2)
def _summary_statement(postgres: bool) -> str:
    ctes, select = _summary_parts(postgres, CHANGED)
    changed = changed_end_users("$1", "$2", "$3", borderline=True, postgres=postgres)
    return f"WITH {CHANGED} AS ({changed}), {_live_balances(postgres)}, {ctes} {select}"


def _horizon(now: datetime) -> float:
    """The factor from window use to the projected use of the horizon."""
    return HORIZON_DAYS / window_days(now)


def _summary(row: Row, pool_id: int, now: datetime, prefix: str = "") -> AllocationSummary:
    """The summary of a row holding the columns of `_SUMMARY_SELECT`, each named with
    `prefix`."""

    def number(name: str) -> int:
        return int(row[prefix + name] or 0)

    # Balances always short over the horizon add h·used - remaining (linear in h); the
    # others, taken live, add their own max(0, h·used - remaining).
    shortfall = (
        _horizon(now) * number("short_window_used")
        - number("short_remaining")
        + float(row[prefix + "shortfall"])
    )
    return AllocationSummary(
        pool_id=pool_id,
        end_users_total=number("total"),
        with_allocation=number("with_allocation"),
        with_credits=number("with_credits"),
        low=number("low"),
        exhausted=number("exhausted"),
        allocated=number("pool_allocated"),
        used=number("pool_used"),
        remaining=number("held"),
        unallocated=number("unallocated"),
        window_used=number("window_used"),
        shortfall=shortfall,
        now=now,
    )


async def allocation_summary(application_id: int, pool_id: int, now: datetime) -> AllocationSummary:
    """The pool's End User figures (docs/reporting.md#burn-rate-exhaustion-allocation-summary) in
    one statement: the pool's report sums, less the report rows of the End Users changed since the
    fold, plus those End Users live (`models.balance_report`)."""
    rows = await single_statement(
        lambda db: db.records(
            _summary_statement(db.postgres),
            application_id,
            pool_id,
            window_start(now),
            _horizon(now),
            planned_once=True,
        )
    )
    return _summary(rows[0], pool_id, now)


class Ranking(StrEnum):
    TOP_CONSUMERS = "TOP_CONSUMERS"  # most used first
    CLOSE_TO_RUNNING_OUT = "CLOSE_TO_RUNNING_OUT"  # soonest projected exhaustion first


# (the window use comes with the ranked End User: see `_top`)
_RANKED_COLUMNS = _balance_columns("top.w")


@dataclass(frozen=True, slots=True)
class _RankingSql:
    report_key: str  # on balance_report r
    report_filter: str
    live_key: str  # on the live balances b (`_live_balances`)
    live_filter: str
    direction: str


_RANKINGS = {
    Ranking.TOP_CONSUMERS: _RankingSql("r.used", "r.used > 0", "b.used", "b.used > 0", "DESC"),
    Ranking.CLOSE_TO_RUNNING_OUT: _RankingSql(
        "r.exhaustion",
        "r.exhaustion IS NOT NULL",
        EXHAUSTION_KEY.format(remaining="b.remaining", window_used="b.window_used"),
        "b.remaining > 0 AND b.window_used > 0",
        "ASC",
    ),
}


def _folded_top(ranking: Ranking, limit: str) -> str:
    """The ranking's first `limit` (End User, sort key, window use) rows of the report
    alone: `_top` when no End User changed since the fold."""
    sql = _RANKINGS[ranking]
    return (
        f"SELECT r.end_user_id, {sql.report_key} AS k, r.window_used AS w FROM balance_report r"
        f" WHERE r.pool_id = $2 AND {sql.report_filter}"
        f" ORDER BY {sql.report_key} {sql.direction}, r.end_user_id LIMIT {limit}"
    )


def _top(ranking: Ranking, limit: str) -> str:
    """The ranking's first `limit` (End User, sort key, window use) rows: the first of the
    report's index order among the End Users unchanged since the fold, merged with the
    changed ones taken live (`models.balance_report`). An unchanged End User's report row
    holds its window use as it is now (a use in the hour the window left since the fold
    makes it changed), so only the changed ones' is summed from the ledger (the CTE
    `_LIVE_BALANCES`, those flagged `changed`)."""
    sql = _RANKINGS[ranking]
    return (
        "SELECT end_user_id, k, w FROM (SELECT end_user_id, k, w FROM (SELECT r.end_user_id,"
        f" {sql.report_key} AS k, r.window_used AS w FROM balance_report r WHERE r.pool_id = $2"
        f" AND {sql.report_filter} AND r.end_user_id NOT IN (SELECT end_user_id FROM {CHANGED})"
        f" ORDER BY {sql.report_key} {sql.direction}, r.end_user_id LIMIT {limit}) folded"
        f" UNION ALL SELECT b.end_user_id, {sql.live_key}, b.window_used"
        f" FROM {_LIVE_BALANCES} b WHERE b.changed AND {sql.live_filter}) candidates"
        f" ORDER BY k {sql.direction}, end_user_id LIMIT {limit}"
    )


def _ranked_rows(top: str, postgres: bool, tag: str = "", balance_by_key: bool = False) -> str:
    """The End Users of CTE `top` with their balance in the pool and the sort key;
    `balance_by_key`: each balance too looked up by its key (PostgreSQL)."""
    # On PostgreSQL each of the few End Users by its key, in a subquery kept as one: for a
    # generic LIMIT the planner may otherwise hash the whole table to join so few.
    end_user = (
        "CROSS JOIN LATERAL (SELECT * FROM end_user e WHERE e.id = top.end_user_id OFFSET 0) e"
        if postgres
        else "JOIN end_user e ON e.id = b.end_user_id"
    )
    balance = "JOIN end_user_balance b ON b.end_user_id = top.end_user_id AND b.pool_id = $2"
    if balance_by_key and postgres:
        balance = (
            "CROSS JOIN LATERAL (SELECT * FROM end_user_balance b"
            " WHERE b.end_user_id = top.end_user_id AND b.pool_id = $2 OFFSET 0) b"
        )
    return (
        f"SELECT {tag}{_END_USER_COLUMNS}, {_RANKED_COLUMNS}, top.k FROM {top} top {balance}"
        f" {end_user} JOIN credit_pool p ON p.id = b.pool_id AND p.application_id = $1"
    )


@lru_cache(maxsize=4)
def _ranked_statement(ranking: Ranking, postgres: bool) -> str:
    direction = _RANKINGS[ranking].direction
    return (
        f"WITH {CHANGED} AS ({changed_end_users('$1', '$2', '$3', postgres=postgres)}),"
        f" {_live_balances(postgres)}, top AS ({_top(ranking, '$4')})"
        f" {_ranked_rows('top', postgres)}"
        f" ORDER BY top.k {direction}, e.id"
    )


@lru_cache(maxsize=2)
def _both_rankings_statement(postgres: bool) -> str:
    """Both rankings of a pool, the changed End Users found once for the two ($4 and $5:
    how many of each); each row tagged with its ranking's position in `Ranking`."""
    first, second = Ranking
    return (
        f"WITH {CHANGED} AS ({changed_end_users('$1', '$2', '$3', postgres=postgres)}),"
        f" {_live_balances(postgres)},"
        f" top_0 AS ({_top(first, '$4')}), top_1 AS ({_top(second, '$5')})"
        f" {_ranked_rows('top_0', postgres, '0 AS ranking, ')}"
        f" UNION ALL {_ranked_rows('top_1', postgres, '1 AS ranking, ')}"
    )


async def ranked_end_users(
    application_id: int, pool_id: int, ranking: Ranking, first: int, now: datetime
) -> list[EndUserLine]:
    """The first End Users of a pool by a ranking, ties by id. Top consumers: most used
    first. Close to running out: those holding credits and using them, by projected
    exhaustion (remaining / window use). In one statement (`_top`)."""
    return (await rankings(application_id, pool_id, {ranking: first}, now))[ranking]


async def rankings(
    application_id: int, pool_id: int, firsts: dict[Ranking, int], now: datetime
) -> dict[Ranking, list[EndUserLine]]:
    """The first `firsts[ranking]` End Users of a pool by each ranking asked for (as
    `ranked_end_users`), in one statement whether one or both are asked for."""
    if len(firsts) == 1:
        [(ranking, first)] = firsts.items()
        rows = await single_statement(
            lambda db: db.records(
                _ranked_statement(ranking, db.postgres),
                application_id,
                pool_id,
                window_start(now),
                first,
                planned_once=True,
            )
        )
        return {ranking: [_end_user(row, pool_id, now) for row in rows]}
    order = list(Ranking)
    rows = await single_statement(
        lambda db: db.records(
            _both_rankings_statement(db.postgres),
            application_id,
            pool_id,
            window_start(now),
            *(firsts[ranking] for ranking in order),
            planned_once=True,
        )
    )
    return _ranked_lines(rows, pool_id, now)


def _in_ranking_order(
    items: list[Any], ranking: Ranking, key: Callable[[Any], Any], ident: Callable[[Any], int]
) -> None:
    """Sorts a ranking's items in its order: by their sort key `key`, ties by id `ident`."""
    items.sort(key=ident)
    items.sort(key=key, reverse=_RANKINGS[ranking].direction == "DESC")


def _ranked_lines(rows: list[Row], pool_id: int, now: datetime) -> dict[Ranking, list[EndUserLine]]:
    """Rows tagged with their ranking's position in `Ranking`, by ranking, in its order."""
    order = list(Ranking)
    found: dict[Ranking, list[EndUserLine]] = {ranking: [] for ranking in order}
    for row in rows:
        found[order[row["ranking"]]].append(_end_user(row, pool_id, now))
    for ranking, lines in found.items():
        _in_ranking_order(lines, ranking, lambda line: line.sort_key, lambda line: line.id)
    return found


_WITH_BORDERLINE = "xb"  # the changed End Users and the borderline ones, for the summary

# What of a ranked balance the database writes as JSON: (name in the answer, field of
# BALANCE_FIELD_COLUMNS or BURN_MARKS or `__typename`, None), or (name, `endUser`, its
# entries: (name, field of END_USER_FIELD_SQL or `__typename`)).
RankedEntries = tuple[tuple[str, str, tuple[tuple[str, str], ...] | None], ...]
# Each ranking whose balances the database writes, with their entries.
RankedAsJson = tuple[tuple[Ranking, RankedEntries], ...]


def _ranked_json_sql(entries: RankedEntries, burn: BurnSql | None) -> str:
    """The JSON text of a ranked balance on the row x of `_ranked_rows`, or NULL when an Int
    of it does not fit 32 bits (the server then writes it, and refuses it as the general
    path does)."""
    end_user = _end_user_field_sql("x")
    pairs = []
    for name, field, below in entries:
        if field == "__typename":
            value = json_sql.type_name_text("EndUserBalance")
        elif below is not None:  # endUser
            value = json_sql.text_object(
                (n, json_sql.type_name_text("EndUser") if f == "__typename" else end_user[f])
                for n, f in below
            )
        else:
            value = _balance_value(field, burn)
        pairs.append((name, value))
    fits = _BALANCE_FITS
    return f"CASE WHEN {fits} THEN {json_sql.text_object(pairs)} END"


class _Params:
    """Numbered parameters ($first, then on) added by name as a statement is built, one for
    each name; their values are given for each execution (`burn_params`, `end_user_page`)."""

    def __init__(self, first: int = 1) -> None:
        self.first = first
        self.names: list[str] = []

    def __call__(self, name: str) -> str:
        if name not in self.names:
            self.names.append(name)
        return f"${self.first + self.names.index(name)}"


_SUMMARY_COLUMNS = ", ".join(f"s.{name} AS s_{name}" for name, _ in _SUMMARY_SELECT)


def _ranked_select(
    postgres: bool, as_json: RankedAsJson, burn: BurnSql | None, balance_by_key: bool = False
) -> str:
    """The SELECT of a summary (CTE s) with both rankings (CTEs top_0 and top_1) of
    `_summary_and_rankings_statement` (on PostgreSQL, whether a read of the reports alone
    would answer the same: `s_quiet`)."""
    first, second = Ranking
    written = dict(as_json)

    def rows(position: int, ranking: Ranking) -> str:
        tag = f"{position} AS ranking, "
        ranked = _ranked_rows(f"top_{position}", postgres, tag, balance_by_key)
        if not written:
            return ranked
        entries = written.get(ranking)
        json = "NULL::text" if entries is None else _ranked_json_sql(entries, burn)
        return f"SELECT x.*, {json} AS j FROM ({ranked}) x"

    quiet = f", {unchanged_since_fold('$2', '$3')} AS s_quiet" if postgres else ""
    return (
        f"SELECT {_SUMMARY_COLUMNS}{quiet}, ranked.* FROM s LEFT JOIN"
        f" ({rows(0, first)} UNION ALL {rows(1, second)}) ranked ON 1 = 1"
    )


@lru_cache(maxsize=32)
def _summary_and_rankings_statement(
    postgres: bool, as_json: RankedAsJson = (), utc: bool = True
) -> tuple[str, tuple[str, ...]]:
    """The summary ($4 the horizon factor) and both rankings ($5 and $6: how many of each)
    of a pool: each ranked row with the summary's columns (named `s_` and theirs), or the
    summary alone with NULLs when none is ranked. The changed End Users are found once.
    On PostgreSQL, the rankings of `as_json` come with each balance's JSON text (`j`),
    burn values written with the parameters named in the answer ($7 on; at a moment in
    UTC, `utc`), else as marks for `write_burns`."""
    first, second = Ranking
    ctes, summary = _summary_parts(postgres, _WITH_BORDERLINE)
    param = _Params(7)
    statement = (
        f"WITH {CHANGED} AS ({changed_end_users('$1', '$2', '$3', postgres=postgres)}),"
        f" {_WITH_BORDERLINE} AS (SELECT end_user_id FROM {CHANGED}"
        f" UNION ALL {borderline_end_users('$2')}),"
        f" {_live_balances(postgres, _WITH_BORDERLINE)}, {ctes}, s AS ({summary}),"
        f" top_0 AS ({_top(first, '$5')}), top_1 AS ({_top(second, '$6')})"
        f" {_ranked_select(postgres, as_json, BurnSql(param) if utc else None)}"
    )
    return statement, tuple(param.names)


# The summary's columns for a pool unchanged since the fold: its report's sums, whose
# borderline End Users' rows then equal their live balances (models/balance_report.py), so
# that only their shortfall is added, summed as `_summary_parts` sums it.
_BORDERLINE_ROWS = "pool_id = $2 AND shortfall_class = 2"
_FOLDED_SUMMARY_SELECT = tuple(
    (name, f"COALESCE(r.{name}, 0)")
    if name in (*_SUMMED, "short_window_used", "short_remaining")
    else (name, f"(SELECT {_shortfall(True)} FROM balance_report WHERE {_BORDERLINE_ROWS})")
    if name == "shortfall"
    else (name, sql)
    for name, sql in _SUMMARY_SELECT
)


@lru_cache(maxsize=32)
def _folded_summary_and_rankings_statement(
    as_json: RankedAsJson = (), utc: bool = True
) -> tuple[str, tuple[str, ...]]:
    """PostgreSQL: `_summary_and_rankings_statement` (the same parameters) for a pool whose
    End Users are unchanged since the fold, which it answers the same when its `s_quiet`
    is true, from the reports alone. Its plan lacks the search for the changed End Users,
    their live balances and candidates: most of the other's nodes, each set up on every
    execution, run or not."""
    first, second = Ranking
    columns = ", ".join(f"{sql} AS {name}" for name, sql in _FOLDED_SUMMARY_SELECT)
    param = _Params(7)
    statement = (
        f"WITH s AS (SELECT {columns} FROM credit_pool p LEFT JOIN pool_report r"
        " ON r.pool_id = p.id WHERE p.id = $2),"
        f" top_0 AS ({_folded_top(first, '$5')}), top_1 AS ({_folded_top(second, '$6')})"
        f" {_ranked_select(True, as_json, BurnSql(param) if utc else None, True)}"
    )
    return statement, tuple(param.names)


@dataclass(frozen=True, slots=True)
class Ranked:
    """The rankings read with a summary: their rows, made into lines when asked, and the
    JSON texts of their balances where the database wrote every one of a ranking."""

    rows: list[Row]
    pool_id: int
    now: datetime
    asked: frozenset[Ranking]
    texts: dict[Ranking, list[str]]

    def lines(self) -> dict[Ranking, list[EndUserLine]]:
        return _ranked_lines(self.rows, self.pool_id, self.now)


def _ranked_texts(
    rows: list[Row], as_json: RankedAsJson, now: datetime
) -> dict[Ranking, list[str]]:
    """The written JSON texts of each ranking of `as_json`, in its order, when all were."""
    order = list(Ranking)
    found: dict[Ranking, list[Row]] = {ranking: [] for ranking, _ in as_json}
    for row in rows:
        ranked = found.get(order[row["ranking"]])
        if ranked is not None:
            ranked.append(row)
    texts = {}
    for ranking, ranked in found.items():
        if any(row["j"] is None for row in ranked):
            continue  # an Int beyond 32 bits: the server's lines
        _in_ranking_order(ranked, ranking, lambda row: row["k"], lambda row: row["id"])
        texts[ranking] = [row["j"] for row in ranked]
    # the marks of burn values the database did not write, replaced in one pass
    written = write_burns(
        {(ranking, i): text for ranking, ranked in texts.items() for i, text in enumerate(ranked)},
        now,
    )
    for (ranking, i), text in written.items():
        texts[ranking][i] = text
    return texts


# Pools whose last summary read found no End User changed since the fold (`s_quiet`): their
# next read tries the reports alone first (`_folded_summary_and_rankings_statement`). Only
# a choice of statement: either answers exactly, or says it cannot.
_QUIET_POOLS: set[int] = set()
_QUIET_POOLS_KEPT = 10_000


def _note_quiet(pool_id: int, row: Row) -> None:
    if not row.get("s_quiet"):  # (absent on SQLite)
        _QUIET_POOLS.discard(pool_id)
        return
    if len(_QUIET_POOLS) >= _QUIET_POOLS_KEPT:
        _QUIET_POOLS.clear()
    _QUIET_POOLS.add(pool_id)


async def summary_and_ranked(
    application_id: int,
    pool_id: int,
    firsts: dict[Ranking, int],
    now: datetime,
    as_json: RankedAsJson = (),
) -> tuple[AllocationSummary, Ranked]:
    """The pool's summary (as `allocation_summary`) and the rankings asked for (as
    `rankings`), in one statement: a dashboard asks for them together (on PostgreSQL, from
    the reports alone for a pool quiet at its last read, `_QUIET_POOLS`; two statements when
    it changed since). On PostgreSQL the balances of the rankings of `as_json` come as JSON
    texts too."""
    utc = now.tzinfo is UTC
    counts = tuple(firsts.get(ranking, 0) for ranking in Ranking)

    def read(db: Any, folded: bool = False) -> Any:
        statement, names = (
            _folded_summary_and_rankings_statement(as_json, utc)
            if folded
            else _summary_and_rankings_statement(db.postgres, as_json if db.postgres else (), utc)
        )
        return db.records(
            statement,
            application_id,
            pool_id,
            window_start(now),
            _horizon(now),
            *counts,
            *burn_params(names, now),
            planned_once=True,
        )

    rows = None
    if pool_id in _QUIET_POOLS and on_postgres():
        rows = await single_statement(lambda db: read(db, folded=True))
        if not rows[0]["s_quiet"]:  # changed since: the reports alone do not answer
            rows = None
    if rows is None:
        rows = await single_statement(read)
    _note_quiet(pool_id, rows[0])
    ranked = [row for row in rows if row["ranking"] is not None]
    # (the rows carry the texts where the database wrote them: on PostgreSQL)
    texts = _ranked_texts(ranked, as_json, now) if as_json and "j" in rows[0].keys() else {}
    return _summary(rows[0], pool_id, now, "s_"), Ranked(
        ranked, pool_id, now, frozenset(firsts), texts
    )


async def summary_and_rankings(
    application_id: int, pool_id: int, firsts: dict[Ranking, int], now: datetime
) -> tuple[AllocationSummary, dict[Ranking, list[EndUserLine]]]:
    """The pool's summary and the rankings asked for, as lines (`summary_and_ranked`)."""
    summary, ranked = await summary_and_ranked(application_id, pool_id, firsts, now)
    lines = ranked.lines()
    return summary, {ranking: lines[ranking] for ranking in firsts}


# ------------------------------------------------------------------------- End User lists


class StatusFilter(StrEnum):
    OK = "OK"
    LOW = "LOW"
    EXHAUSTED = "EXHAUSTED"  # allocated some, none left
    NO_ALLOCATION = "NO_ALLOCATION"  # never allocated anything in the pool (net)


class OrderField(StrEnum):
    CREATED = "CREATED"
    USED = "USED"
    REMAINING = "REMAINING"
    PROJECTED_EXHAUSTION = "PROJECTED_EXHAUSTION"


# The stored status (`models.balances.status_sql`); no row: never allocated anything.
_STATUS_SQL = {
    status: f"COALESCE(b.status, 'NO_ALLOCATION') = '{status}'" for status in StatusFilter
}


def _status_total(app: str, pool: str, statuses: Iterable[StatusFilter]) -> str:
    """The number of the application's End Users whose status in the pool is one of
    `statuses`, counted from the pool's balances, not End User by End User: an End User
    holds at most one balance in a pool, and one without a balance was never allocated
    anything there (NO_ALLOCATION). So it is the balances of those statuses, or, with
    NO_ALLOCATION among them, every End User less the balances of the other statuses."""
    wanted = set(statuses)
    if StatusFilter.NO_ALLOCATION not in wanted:
        counted, sign = wanted, ""
    else:
        counted, sign = set(StatusFilter) - wanted, f"{END_USER_TOTAL.format(app)} - "
    names = ", ".join(f"'{status.value}'" for status in sorted(counted))
    balances = (
        f"(SELECT COUNT(*) FROM end_user_balance b WHERE b.pool_id = {pool}"
        f" AND b.status IN ({names}))"
        if counted
        else "0"
    )
    return f"({sign}{balances})"


# Projected exhaustion orders by remaining / window use; End Users using nothing never run
# out and come after every other (a key larger than any ratio of two Ints).
NEVER = 1e18
_NEVER_SQL = f"CAST({NEVER} AS DOUBLE PRECISION)"


def _projection_key(remaining: str, window_used: str) -> str:
    """The projected-exhaustion sort key of a balance's SQL expressions."""
    ratio = EXHAUSTION_KEY.format(remaining=remaining, window_used=window_used)
    return f"CASE WHEN {window_used} > 0 THEN {ratio} ELSE {_NEVER_SQL} END"


_KEY_SQL = {
    OrderField.CREATED: "e.id",
    OrderField.USED: "COALESCE(b.used, 0)",
    OrderField.REMAINING: "COALESCE(b.remaining, 0)",
    OrderField.PROJECTED_EXHAUSTION: _projection_key("COALESCE(b.remaining, 0)", WINDOW_USED),
}


@dataclass(frozen=True, slots=True)
class Listing:
    """Which End Users, in which order: a status filter and an order are about one pool."""

    pool_id: int | None = None
    statuses: tuple[StatusFilter, ...] = ()
    order: OrderField = OrderField.CREATED
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """A page of End Users: their lines (none when the database wrote their whole nodes),
    and each one's (id, sort key), in order."""

    lines: list[EndUserLine]
    keys: list[tuple[int, Any]]
    has_next: bool
    total: int
    # each End User's balances as JSON text, when asked for and the database wrote them
    balance_texts: dict[int, str] | None = None
    # each End User's whole node as JSON text, likewise
    node_texts: dict[int, str] | None = None


# The balances a page may carry as JSON (`balances_json_sql`): entries and type name.
BalancesAsJson = tuple[tuple[tuple[str, str], ...], str]


# An End User's fields as the API names them, as PostgreSQL writes their JSON text, on the
# page's row `page` (models/json_sql.py).
def _end_user_field_sql(row: str) -> dict[str, str]:
    return {
        "id": json_sql.json_text(f"{row}.id::text"),
        "externalId": json_sql.json_text(f"{row}.external_id"),
        "name": json_sql.json_text(f"{row}.name"),
        "email": json_sql.json_text(f"{row}.email"),
        "createdAt": f"'\"' || {json_sql.iso_time(f'{row}.created_at')} || '\"'",
    }


END_USER_FIELD_SQL = _end_user_field_sql("page")


@dataclass(frozen=True, slots=True)
class PageJson:
    """What of a page the database writes as JSON: the balances of the one balances
    selection, and the whole node of the one node selection ((name in the answer, field
    of END_USER_FIELD_SQL, `balances` or `__typename`)), when each is plain or a burn."""

    balances: BalancesAsJson | None = None
    node: tuple[tuple[str, str], ...] | None = None

    @property
    def burns(self) -> bool:
        """Whether the balances written carry burn values."""
        return self.balances is not None and any(
            field in BURN_MARKS for _, field in self.balances[0]
        )

    def sql(self, app: str, param: Callable[[str], str], utc: bool) -> tuple[str, str]:
        """The columns the page's statement adds (`j`: the balances, `n`: the node) and the
        lateral join they read the balances from; `param` adds a parameter by name (`ws`:
        the burn window's start, or one of `_BURN_PARAMS`, which are written at a moment in
        UTC, `utc`; else as marks)."""
        columns = lateral = ""
        if self.balances is not None:
            entries, type_name = self.balances
            burn = self.burns
            window = param("ws") if burn else None
            written = BurnSql(param) if burn and utc else None
            balances = balances_json_sql("page.id", app, entries, type_name, window, written)
            # (OFFSET 0: kept a subquery, so its JSON is written once per row, not once
            # per use)
            lateral = f" LEFT JOIN LATERAL (SELECT {balances} AS j OFFSET 0) bj ON TRUE"
            columns = ", bj.j"
        if self.node is not None:
            columns = ""  # the balances are in the node
            pairs = [
                (
                    name,
                    json_sql.type_name_text("EndUser")
                    if field == "__typename"
                    else "bj.j"
                    if field == "balances"
                    else END_USER_FIELD_SQL[field],
                )
                for name, field in self.node
            ]
            fits = "page.external_id IS NOT NULL AND page.created_at IS NOT NULL"
            if lateral:
                fits += f" AND bj.j <> '{_UNFIT}'"
            columns += f", CASE WHEN {fits} THEN {json_sql.text_object(pairs)} END AS n"
        return columns, lateral


# The orders the balance report's indexes serve (migration 0018): each one's key on a report
# row (the live key of a balance unchanged since the fold, `_KEY_SQL`'s on the report's
# columns), and the key of an End User with no balance in the pool (nothing used, nothing
# left, never running out).
_REPORT_KEY_SQL = {
    OrderField.USED: ("r.used", "0"),
    OrderField.REMAINING: ("r.remaining", "0"),
    OrderField.PROJECTED_EXHAUSTION: (
        f"({_projection_key('r.remaining', 'r.window_used')})",
        _NEVER_SQL,
    ),
}


def _report_candidates(
    listing: Listing, app: str, pool: str, ws: str, limit: str, after: tuple[str, str] | None
) -> str:
    """CTEs (`changed`, `report_page`, `candidates`) giving End Users among whom the page's
    first `limit` are, read through indexes instead of ordering every End User: those
    changed since the fold (their keys are taken live), the first `limit` of the others by
    the report's index, and the first `limit` of those with no balance in the pool (all of
    one key; only when the report's first ones do not all come before that key). The
    page's statement then orders these few as it would order them all."""
    key, missing_key = _REPORT_KEY_SQL[listing.order]
    direction = "DESC" if listing.descending else "ASC"
    cmp, before = ("<", ">") if listing.descending else (">", "<")
    report = f"r.pool_id = {pool} AND r.end_user_id NOT IN (SELECT end_user_id FROM changed)"
    missing = (
        f"e.application_id = {app} AND NOT EXISTS (SELECT 1 FROM end_user_balance b"
        f" WHERE b.end_user_id = e.id AND b.pool_id = {pool})"
        # (needed only when fewer than `limit` of the report's come before their key)
        f" AND (SELECT COUNT(*) FROM report_page WHERE report_page.k {before} {missing_key})"
        f" < {limit}"
    )
    if listing.statuses:
        report += " AND r.status IN (" + ", ".join(f"'{s}'" for s in listing.statuses) + ")"
    if after is not None:
        k, i = after
        report += f" AND ({key}, r.end_user_id) {cmp} ({k}, {i})"
        missing += f" AND ({missing_key} {cmp} {k} OR ({missing_key} = {k} AND e.id {cmp} {i}))"
    parts = ["SELECT end_user_id AS id FROM changed", "SELECT id FROM report_page"]
    if not listing.statuses or StatusFilter.NO_ALLOCATION in listing.statuses:
        parts.append(
            f"SELECT id FROM (SELECT e.id FROM end_user e WHERE {missing}"
            f" ORDER BY e.id {direction} LIMIT {limit}) m"
        )
    return (
        f"changed AS ({changed_end_users(app, pool, ws, postgres=True)}),"
        f" report_page AS (SELECT r.end_user_id AS id, {key} AS k FROM balance_report r"
        f" WHERE {report} ORDER BY {key} {direction}, r.end_user_id {direction} LIMIT {limit}),"
        f" candidates AS ({' UNION ALL '.join(parts)}), "
    )


@dataclass(frozen=True, slots=True)
class _PageStatement:
    """A page's statement as `end_user_page` sends it: read plainly, and with the JSON the
    database writes (`as_json`), each with the names of its parameters in order (the plain
    one's first among the written one's; the same when nothing is written)."""

    plain: str
    plain_names: tuple[str, ...]
    written: str | None
    written_names: tuple[str, ...]
    planned_once: bool
    # a page that may be kept (`models.kept_pages`): the written statement's rows carry its
    # marker, and this statement reads the marker again, with its parameters' names
    check: str | None = None
    check_names: tuple[str, ...] = ()


@lru_cache(maxsize=256)
def _page_statement(
    listing: Listing,  # its pool's id aside
    paged: bool,
    as_json: PageJson | None,
    by_report: bool,
    postgres: bool,
    utc: bool,
    keep: bool = True,
) -> _PageStatement:
    """The statement of a page of `listing` (after a cursor: `paged`), built once per shape:
    its parameters are named (`app`, `pool`, `ws`, `k` and `i` the cursor, `limit`, and
    the burn's, `_BURN_PARAMS`), their values given for each execution."""
    projected = listing.order == OrderField.PROJECTED_EXHAUSTION
    param = _Params()
    app = param("app")
    where = f"e.application_id = {app}"
    columns = _END_USER_COLUMNS
    joins = pool = ws = ""
    if listing.pool_id is not None:
        pool = param("pool")
        joins = (
            f" LEFT JOIN end_user_balance b ON b.end_user_id = e.id AND b.pool_id = {pool}"
            f" JOIN credit_pool p ON p.id = {pool}"
        )
        # the window use is only needed (and joined) to order by projected exhaustion
        columns += ", " + _balance_columns(WINDOW_USED if projected else "0")
        if projected:
            ws = param("ws")
            joins += window_used_joins("e.id", pool, f"l.pool_id = {pool}", ws)
    if listing.statuses:
        where += " AND (" + " OR ".join(_STATUS_SQL[s] for s in listing.statuses) + ")"
    keyset = ""
    position = None
    if paged:
        cmp = "<" if listing.descending else ">"
        k, i = param("k"), param("i")
        keyset = f" WHERE x.k {cmp} {k} OR (x.k = {k} AND x.id {cmp} {i})"
        position = (k, i)
    direction = "DESC" if listing.descending else "ASC"
    limit = param("limit")
    candidates, source = "", f"end_user e{joins}"
    # a page of all of an application's End Users, whole nodes or balances written by the
    # database: kept between reads while its marker holds (models/kept_pages.py), unless
    # read without (`keep`)
    keep = keep and postgres and as_json is not None and listing.pool_id is None
    if keep:
        columns += ", e.xmin AS v"
    if by_report and listing.order in _REPORT_KEY_SQL and pool and postgres:
        # the page's End Users are among a few the report's indexes find: each of them read
        # by its key (the planner, guessing the changed End Users by the thousand, would
        # otherwise hash every End User and balance of the pool to join them)
        ws = ws or param("ws")
        candidates = _report_candidates(listing, app, pool, ws, limit, position)
        source = (
            "(SELECT DISTINCT id FROM candidates) c CROSS JOIN LATERAL"
            " (SELECT * FROM end_user e WHERE e.id = c.id OFFSET 0) e LEFT JOIN LATERAL"
            f" (SELECT * FROM end_user_balance b WHERE b.end_user_id = e.id AND b.pool_id = {pool}"
            f" OFFSET 0) b ON TRUE JOIN credit_pool p ON p.id = {pool}"
        )
        if projected:  # the same WINDOW_USED columns, each End User's sum read by its key
            source += (
                f" CROSS JOIN LATERAL (SELECT {window_used_of('e.id', pool, ws)} AS used"
                " OFFSET 0) wu CROSS JOIN (SELECT 0 AS used) wd"
            )
    if listing.statuses:
        total = _status_total(app, pool, listing.statuses)
    else:  # every End User of the application: its count, not a scan of them all
        total = END_USER_TOTAL.format(app)
    statement = (
        f"WITH {candidates}x AS NOT MATERIALIZED"
        f" (SELECT {columns}, {_KEY_SQL[listing.order]} AS k"
        f" FROM {source} WHERE {where}),"
        f" page AS (SELECT * FROM x{keyset} ORDER BY x.k {direction}, x.id {direction}"
        f" LIMIT {limit}),"
        f" t AS (SELECT {total} AS total{{marker}})"
        " SELECT t.*, {page}{json} FROM t LEFT JOIN page ON 1 = 1{lateral}"
        f" ORDER BY page.k {direction}, page.id {direction}"
    )
    plain = statement.replace("{page}", "page.*").replace("{json}", "").replace("{lateral}", "")
    plain = plain.replace("{marker}", "")
    plain_names = tuple(param.names)
    written = None
    check, check_names = None, ()
    if as_json is not None:
        nodes = as_json.node is not None
        # a kept page's burn values are written at each read, from their marks
        json, lateral = as_json.sql(app, param, utc and not keep)
        # with the whole nodes written, a row is only what the cursors and the order need
        written = statement.replace("{page}", "page.id, page.k" if nodes else "page.*")
        written = written.replace("{json}", json).replace("{lateral}", lateral)
        marker = ""
        if keep:
            marker = ", " + marker_columns(app, param("ws"), "page")
            burns = utc and as_json.burns
            check, check_names = _page_check(listing, paged, burns)
        written = written.replace("{marker}", marker)
    return _PageStatement(
        plain,
        plain_names,
        written,
        tuple(param.names),
        # in id order, every application's page reads the same index
        # (end_user_by_application), and so does a page by a balance read from the report's
        # candidates, unless a status filter makes it count End Users one by one (whose best
        # plan depends on how many)
        (listing.order == OrderField.CREATED and listing.pool_id is None)
        or bool(candidates and not listing.statuses),
        check,
        check_names,
    )


def _page_check(listing: Listing, paged: bool, burns: bool) -> tuple[str, tuple[str, ...]]:
    """The statement reading the marker of a kept page of all of an application's End Users
    in id order (`_page_statement`'s `keep`), with its parameters' names; with `burns`,
    also the burn values (`_burn_values_sql`, at a moment in UTC) of the page's (window
    use, remaining) pairs, `u` and `r` (texts, the numbers comma-separated, the same for
    every read of the page), as `burns`: each pair's rate and exhaustion in order, each
    after a _VALUE_SEPARATOR but the first (a pair each, rather than a mark each: a
    balance's two marks carry the same, and half the rows cost less)."""
    param = _Params()
    app = param("app")
    keyset = ""
    if paged:
        cmp = "<" if listing.descending else ">"
        k, i = param("k"), param("i")
        keyset = f" AND (e.id {cmp} {k} OR (e.id = {k} AND e.id {cmp} {i}))"
    direction = "DESC" if listing.descending else "ASC"
    statement = (
        f"WITH page AS (SELECT e.id, e.xmin AS v FROM end_user e WHERE e.application_id = {app}"
        f"{keyset} ORDER BY e.id {direction} LIMIT {param('limit')})"
        f" SELECT {marker_columns(app, param('ws'), 'page')}"
    )
    if burns:
        pairs = (
            f"unnest(string_to_array({param('u')}::text, ',')::int8[],"
            f" string_to_array({param('r')}::text, ',')::int8[]) WITH ORDINALITY"
            " AS x(window_used, remaining, n)"
        )
        burn = BurnSql(param)
        separator = f"chr({ord(_VALUE_SEPARATOR)})"
        both = f"{_burn_values_sql('R', burn)} || {separator} || {_burn_values_sql('E', burn)}"
        statement += (
            f", (SELECT string_agg({both}, {separator} ORDER BY x.n) FROM {pairs}) AS burns"
        )
    return statement, tuple(param.names)


_VALUE_SEPARATOR = "\x1c"  # (JSON text holds no raw control character; marks hold others)


@dataclass(frozen=True, slots=True)
class _KeptPage:
    """A page as kept (models/kept_pages.py), its burn values as marks, and how the check
    writes them: `parts`, its texts joined by \\x1d and cut at each mark, with a place
    (None) for each mark's value between two cuts; `values`, the place in the check's
    `burns` of each mark's value; `used` and `remaining`, the marks' pairs (each once) as
    the check takes them."""

    page: Page
    parts: list[str | None]
    values: tuple[int, ...]
    used: str
    remaining: str


def _kept_page(page: Page) -> _KeptPage:
    texts = page.node_texts if page.node_texts is not None else page.balance_texts or {}
    # (as `write_burns` reads them: joined, then split at the marks into [text, kind,
    # values, text, kind, values, ..., text])
    cut = _BURN_MARK.split("\x1d".join(texts.values()))
    pairs: dict[str, int] = {}
    values = []
    for i in range(1, len(cut), 3):
        pair = pairs.setdefault(cut[i + 1], len(pairs))
        values.append(2 * pair + (0 if cut[i] == "R" else 1))  # (the rate first)
    split = [pair.split(",") for pair in pairs]
    parts: list[str | None] = [None] * (2 * len(values) + 1)
    parts[::2] = cut[::3]
    used, remaining = ",".join(p[0] for p in split), ",".join(p[1] for p in split)
    return _KeptPage(page, parts, tuple(values), used, remaining)


def _written_burns(kept: _KeptPage, burns: str | None) -> Page:
    """The kept page with its burn values as the check wrote them, `burns` (a mark where it
    could not: `write_burns` writes those)."""
    if not kept.values:
        return kept.page
    assert burns is not None
    page = kept.page
    nodes = page.node_texts is not None
    ids = page.node_texts if nodes else page.balance_texts
    assert ids is not None
    written = burns.split(_VALUE_SEPARATOR)
    parts = kept.parts.copy()
    parts[1::2] = [written[i] for i in kept.values]
    texts = dict(zip(ids, "".join(parts).split("\x1d"), strict=True))  # type: ignore[arg-type]
    return replace(page, node_texts=texts) if nodes else replace(page, balance_texts=texts)


async def end_user_page(
    application_id: int,
    listing: Listing,
    first: int,
    after: tuple[Any, int] | None,
    now: datetime,
    as_json: PageJson | None = None,
    by_report: bool = True,
) -> Page:
    """A page of End Users after the keyset cursor (sort key, id) of the previous page's
    last one, with the total count, in one statement; on PostgreSQL with their balances or
    whole nodes as JSON too, as `as_json` asks. The order is total (ties broken by
    id, in the same direction), so pages never overlap or skip while the keys stay put; an
    End User whose key changes between two pages (it consumed) moves, as in any live order.
    On PostgreSQL a page ordered by a balance considers only the End Users the balance
    report's indexes name (`_report_candidates`; `by_report=False`: every End User)."""
    if listing.pool_id is None and (listing.statuses or listing.order != OrderField.CREATED):
        raise ValidationFailed(
            "a status filter or an order by credits needs a pool", field="filter"
        )
    utc = now.tzinfo is UTC
    # (one statement for every pool: its id is a parameter)
    shape = listing if listing.pool_id is None else replace(listing, pool_id=0)
    postgres = on_postgres()
    statement = _page_statement(shape, after is not None, as_json, by_report, postgres, utc)
    values: dict[str, Any] = {
        "app": application_id,
        "pool": listing.pool_id,
        "limit": first + 1,
        **({} if after is None else {"k": after[0], "i": after[1]}),
    }

    def value(name: str) -> Any:
        if name in values:
            return values[name]
        return window_start(now) if name == "ws" else _BURN_PARAMS[name](now)

    kept_as: tuple[Any, ...] | None = None
    if statement.check is not None:
        # (what it writes, and where: the check's arguments but the pairs and the moment)
        kept_as = (statement.written, *(values.get(name) for name in _PLACE))
        kept = _KEPT_PAGES.get(kept_as)
        if kept is not None:
            marker, held = kept
            found = await _check_kept(statement, held, value)
            if found["quiet"] and found["marker"] == marker:
                return _burns_of(statement, held, found)
            _KEPT_PAGES.drop(kept_as)
        if _KEPT_PAGES.busy(kept_as):  # changing: read without the marker, in one statement
            kept_as = None
            statement = _page_statement(
                shape, after is not None, as_json, by_report, postgres, utc, keep=False
            )
    # (the plain statement's parameters are the first of the written one's)
    args = [value(name) for name in statement.written_names]
    nodes = as_json is not None and as_json.node is not None
    rows, as_written = await written_or_plain(
        statement.written,
        statement.plain,
        args[: len(statement.plain_names)],
        # a node it could not write: the page is read whole
        lambda rows: nodes and any(row["id"] is not None and row["n"] is None for row in rows),
        args,
        planned_once=statement.planned_once,
    )
    head = rows[0]
    total = int(head["total"])
    rows = [row for row in rows if row["id"] is not None]
    keys = [(row["id"], row["k"]) for row in rows[:first]]
    if nodes and as_written:
        node_texts = {row["id"]: row["n"] for row in rows[:first]}
        page = Page([], keys, len(rows) > first, total, node_texts=node_texts)
    else:
        lines = [_end_user(row, listing.pool_id, now) for row in rows[:first]]
        balance_texts = None
        if as_written and as_json is not None and as_json.balances is not None:
            balance_texts = {row["id"]: row["j"] for row in rows[:first]}
            if _UNFIT in balance_texts.values():
                balance_texts = None
        page = Page(lines, keys, len(rows) > first, total, balance_texts=balance_texts)
    if kept_as is None or not as_written:
        return page
    if not head["quiet"]:
        _KEPT_PAGES.found_busy(kept_as)
        return page
    held = _kept_page(page)
    _KEPT_PAGES.put(kept_as, head["marker"], held)
    if not held.values or "u" not in statement.check_names:
        return page  # no burn values, or marks `write_burns` writes
    # the burn values of this page, by the check (whose marker, a later snapshot's, is not
    # the page's: the page keeps its own)
    return _burns_of(statement, held, await _check_kept(statement, held, value))


# What a kept page's check reads is the same page: its statement's arguments but the burn
# window's pairs and moment.
_PLACE = ("app", "k", "i", "limit", "ws")


async def _check_kept(
    statement: _PageStatement, held: _KeptPage, value: Callable[[str], Any]
) -> Row:
    """The check's row for the kept page `held`: its marker, and its burn values if any."""
    pairs = {"u": held.used, "r": held.remaining}
    args = [pairs[name] if name in pairs else value(name) for name in statement.check_names]
    check = statement.check
    assert check is not None
    found = await single_statement(lambda db: db.records(check, *args, planned_once=True))
    return found[0]


def _burns_of(statement: _PageStatement, held: _KeptPage, found: Row) -> Page:
    """The kept page with the burn values its check wrote, if it writes them."""
    if "u" not in statement.check_names:
        return held.page
    return _written_burns(held, found["burns"])


# Pages of End Users kept between reads (models/kept_pages.py), by the statement that wrote
# them and the check's arguments.
_KEPT_PAGES: KeptPages[_KeptPage] = KeptPages()


def forget_kept_pages() -> None:
    """Drops every kept page: the database they were read from is closed."""
    _KEPT_PAGES.clear()
