"""The service's clock: the real time, unless a caller books history at a time of its own.

`booked_at(moment)` makes `now()` (Python) and the SQL `now()` of every statement run
through `models.sql.Sql` answer `moment` for the current task and the tasks it starts, so
an operation run inside it is written exactly as it would have been at that moment
(`created_at`, `occurred_at`, lot expiry, alerts, billing closing times), by the same code
and rules. The demo uses it to book 60 days of history in order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_booking_time: ContextVar[datetime | None] = ContextVar("booking_time", default=None)


def now() -> datetime:
    """The current time (UTC, aware): the booking time when one is set."""
    return _booking_time.get() or datetime.now(UTC)


def booking_time() -> datetime | None:
    """The time set by `booked_at`, None when the service runs on the real clock."""
    return _booking_time.get()


@contextmanager
def booked_at(moment: datetime) -> Iterator[None]:
    """Runs the block as if it were `moment` (aware; never later than the real time)."""
    if moment.tzinfo is None:
        raise ValueError("a booking time must carry a time zone")
    moment = moment.astimezone(UTC)
    if moment > datetime.now(UTC):
        raise ValueError("history can be booked in the past only")
    token = _booking_time.set(moment)
    try:
        yield
    finally:
        _booking_time.reset(token)
