"""PostgreSQL expressions that write an answer's JSON values as the GraphQL layer serializes
them, so that a plain list can come out of the database as JSON text and be spliced into
the answer (resolvers/preserialized.py): strings as they are, Ints and Floats as numbers,
enums by their stored name, DateTime as Python's `isoformat` of the UTC time."""

from __future__ import annotations

from collections.abc import Iterable

# Python's isoformat of an aware UTC datetime: microseconds only when there are some.
_ISO_TIME = (
    "(to_char({t} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN date_trunc('second', {t}) = {t} THEN ''"
    " ELSE to_char({t} AT TIME ZONE 'UTC', '.US') END || '+00:00')"
)
INT32 = "BETWEEN -2147483648 AND 2147483647"


def iso_time(column: str) -> str:
    """A timestamptz `column` as the text `datetime.isoformat()` gives for it in UTC."""
    return _ISO_TIME.format(t=column)


def finite(column: str) -> str:
    """True where a float8 `column` is a number JSON can hold (not NaN, not infinite)."""
    return f"{column} NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)"


def text_object(pairs: Iterable[tuple[str, str]]) -> str:
    """A JSON object as text from (name in the answer, SQL expression of the value's JSON
    text) pairs, in their order, built by concatenation: cheaper than `json_build_object`,
    which looks up each value's type on every call, and a value may be any text (a mark the
    server replaces, `models.allocation_report.write_burns`). NULL if any value is."""
    parts = ",".join(f"\"{name}\":' || {sql} || '" for name, sql in pairs)
    return f"('{{{parts}}}')"


def json_text(sql: str) -> str:
    """The JSON text of a value (`null` for NULL)."""
    return f"COALESCE(to_json({sql})::text, 'null')"


def name_text(sql: str) -> str:
    """The JSON text of a non-null name of ours that JSON holds as it is (an enum value's
    stored name: capitals and underscores; an ISO time), without `to_json`'s escaping
    pass."""
    return f"('\"' || {sql} || '\"')"


def type_name_text(name: str) -> str:
    """A `__typename` entry's JSON text, for `text_object`."""
    return f"'\"{name}\"'"
