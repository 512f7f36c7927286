"""Opaque page cursors: `<kind>:<value>` in URL-safe base64. A cursor of another kind (another
connection's), or one that does not decode, is refused with a VALIDATION error on `after`."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TypeVar

from models.errors import ValidationFailed

T = TypeVar("T")


def encode_cursor(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def cursor_value(
    cursor: str,
    kind: str,
    parse: Callable[[str], T],
    refusal: str = "after is not a cursor of this connection",
) -> T:
    """`parse` of the value of a cursor of `kind`; `parse` raises ValueError for a value
    it does not take."""
    try:
        found, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if found == kind:
            return parse(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise ValidationFailed(refusal, field="after")


def whole_number(text: str) -> int:
    """A cursor's id: digits only (`int` takes signs and spaces)."""
    if not text.isdigit():
        raise ValueError(text)
    return int(text)
