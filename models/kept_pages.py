"""End User pages kept between reads (PostgreSQL), each reused only while a short statement
finds nothing on it changed: a page's JSON costs PostgreSQL about ten times what that check
does, and a dashboard asks for the same first page again and again.

What a page shows comes from its End Users' rows, their balances in the application's
pools, the pools' rows, the End User count, and each balance's use over the burn window (the
folded sums and the ledger's tail). The marker (`marker_columns`) reads, in one snapshot:

- the row versions (xmin) of the page's End Users and of the application's pools (a row
  updated, inserted or deleted changes them, and so does an End User joining the page);
- the rollup state's row version: every fold, which rewrites the folded window sums and the
  balance report, updates that row in its transaction;
- the End User count;
- whether every pool of the application is unchanged since the fold
  (`models.balance_report.unchanged_since_fold`: no ledger entry since the watermark, no
  threshold change, the burn window where the fold left it). Then, by the balance report's
  rule, every balance equals its report row, and its window use the folded sum.

A page is kept only when its own statement found every pool unchanged, and reused only
when the check finds them unchanged still and the same marker: then no balance, pool, End
User or fold differs between the two snapshots, and the page would read the same. The
burn values, which move with the time, are kept as marks and written at each read by the
check, from each balance's window use and remaining (`models.allocation_report`). Row
versions repeat only after billions of transactions; a kept page is dropped long before
(`KEPT_SECONDS`)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from models.balance_report import unchanged_since_fold
from models.rollups import END_USER_TOTAL

T = TypeVar("T")

KEPT_PAGES = 256  # at most, the least recently read dropped first
KEPT_SECONDS = 60.0  # a fold every 30 s changes the marker anyway
# A page found changing is read without its marker (the cheaper statement) for this long:
# under a stream of writes, keeping it would only cost a second statement per read.
BUSY_SECONDS = 1.0


def marker_columns(app: str, ws: str, page: str) -> str:
    """The columns `marker` (text) and `quiet` (bool) of a page of application `app`, the
    burn window starting at `ws` (SQL expressions), whose End Users' ids and row versions
    are the columns `id` and `v` of the CTE named `page`."""
    pools = (
        f"ARRAY(SELECT p.id || ':' || p.xmin FROM credit_pool p WHERE p.application_id = {app}"
        " ORDER BY p.id)::text"
    )
    end_users = f"ARRAY(SELECT g.id || ':' || g.v FROM {page} g ORDER BY g.id)::text"
    marker = (
        f"concat_ws('|', current_database(), {END_USER_TOTAL.format(app)},"
        f" (SELECT s.xmin FROM rollup_state s WHERE s.id = 1), {pools}, {end_users})"
    )
    quiet = (
        f"NOT EXISTS (SELECT 1 FROM credit_pool p WHERE p.application_id = {app}"
        f" AND NOT ({unchanged_since_fold('p.id', ws)}))"
    )
    return f"{marker} AS marker, {quiet} AS quiet"


class _Expiring(Generic[T]):
    """At most `size` values by key, each forgotten at its time (time.monotonic()), the
    least recently read dropped first when full."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._values: OrderedDict[Hashable, tuple[float, T]] = OrderedDict()

    def get(self, key: Hashable) -> T | None:
        found = self._values.get(key)
        if found is None:
            return None
        if found[0] < time.monotonic():
            del self._values[key]
            return None
        self._values.move_to_end(key)
        return found[1]

    def put(self, key: Hashable, value: T, seconds: float) -> None:
        self._values[key] = (time.monotonic() + seconds, value)
        self._values.move_to_end(key)
        while len(self._values) > self._size:
            self._values.popitem(last=False)

    def drop(self, key: Hashable) -> None:
        self._values.pop(key, None)

    def clear(self) -> None:
        self._values.clear()


class KeptPages(Generic[T]):
    """Pages by the statement and arguments that read them, with the marker read with each;
    and the pages last found changing, which are not worth keeping for a while (`BUSY_SECONDS`)."""

    def __init__(self, size: int = KEPT_PAGES) -> None:
        self._kept: _Expiring[tuple[str, T]] = _Expiring(size)
        self._busy: _Expiring[bool] = _Expiring(size)

    def busy(self, key: Hashable) -> bool:
        """Whether the page was found changing less than `BUSY_SECONDS` ago."""
        return self._busy.get(key) is not None

    def found_busy(self, key: Hashable) -> None:
        self._busy.put(key, True, BUSY_SECONDS)

    def get(self, key: Hashable) -> tuple[str, T] | None:
        """The kept page's marker and page, if kept."""
        return self._kept.get(key)

    def put(self, key: Hashable, marker: str, value: T) -> None:
        self._kept.put(key, (marker, value), KEPT_SECONDS)

    def drop(self, key: Hashable) -> None:
        self._kept.drop(key)

    def clear(self) -> None:
        self._kept.clear()
        self._busy.clear()
