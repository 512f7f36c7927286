"""PostgreSQL expressions that write an answer's JSON values as the GraphQL layer serializes
them, so that a plain list can come out of the database as JSON text and be spliced into
the answer (resolvers/preserialized.py): strings as they are, Ints and Floats as numbers,
enums by their stored name, DateTime as Python's `isoformat` of the UTC time."""

from __future__ import annotations

from collections.abc import Iterable

# Python's isoformat of an aware UTC datetime: microseconds only when there are some.
_ISO_TIME = (
    "(to_char({t}, 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN date_trunc('second', {t}) = {t} THEN '' ELSE to_char({t}, '.US') END"
    " || '+00:00')"
)
INT32 = "BETWEEN -2147483648 AND 2147483647"
_US_PER_DAY = 86_400_000_000
# |days| under this keeps `now + timedelta(days=...)` inside datetime's range (years 1-9999)
MAX_DAYS_AHEAD = 700_000


def iso_time(column: str) -> str:
    """A timestamptz `column` as the text `datetime.isoformat()` gives for it in UTC."""
    return _ISO_TIME.format(t=f"({column} AT TIME ZONE 'UTC')")


def iso_time_after_days(now: str, days: str) -> str:
    """The text of `(now + timedelta(days=days)).isoformat()` for a timestamptz `now` (in
    UTC) and a float8 `days` under MAX_DAYS_AHEAD in size: a scalar subquery that rounds
    as CPython's timedelta does (the whole days exactly, then the fraction's microseconds
    truncated, then what is left rounded half to even on the total)."""
    split = (
        f"SELECT trunc(s.d) AS a, (s.d - trunc(s.d)) * CAST({_US_PER_DAY} AS float8) AS g"
        f" FROM (SELECT {days} AS d) s"
    )
    whole = (
        f"SELECT CAST(v.a AS bigint) * {_US_PER_DAY} + CAST(trunc(v.g) AS bigint) AS x,"
        f" v.g - trunc(v.g) AS h FROM ({split}) v"
    )
    rounded = (
        "SELECT u.x + CASE WHEN u.h > 0.5 THEN 1 WHEN u.h < -0.5 THEN -1"
        " WHEN u.h = 0.5 THEN u.x & 1 WHEN u.h = -0.5 THEN -(u.x & 1) ELSE 0 END AS us"
        f" FROM ({whole}) u"
    )
    moment = (
        f"SELECT ({now} AT TIME ZONE 'UTC') + (t.us / {_US_PER_DAY}) * interval '1 day'"
        f" + (t.us % {_US_PER_DAY}) * interval '1 microsecond' AS m FROM ({rounded}) t"
    )
    return f"(SELECT {_ISO_TIME.format(t='w.m')} FROM ({moment}) w)"


def finite(column: str) -> str:
    """True where a float8 `column` is a number JSON can hold (not NaN, not infinite)."""
    return f"{column} NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)"


def json_object(pairs: Iterable[tuple[str, str]]) -> str:
    """`json_build_object` of (name in the answer, SQL expression) pairs, in their order."""
    return "json_build_object(" + ", ".join(f"'{name}', {sql}" for name, sql in pairs) + ")"


def type_name(name: str) -> str:
    """A `__typename` entry's value."""
    return f"'{name}'::text"
