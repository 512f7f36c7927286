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
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class _Kept(Generic[T]):
    marker: str
    value: T
    until: float  # time.monotonic()


class KeptPages(Generic[T]):
    """Pages by the statement and arguments that read them, with the marker read with each;
    and the pages last found changing, which are not worth keeping for a while (`BUSY`)."""

    def __init__(self, size: int = KEPT_PAGES, seconds: float = KEPT_SECONDS) -> None:
        self._size = size
        self._seconds = seconds
        self._kept: OrderedDict[Hashable, _Kept[T]] = OrderedDict()
        self._busy: OrderedDict[Hashable, float] = OrderedDict()

    def busy(self, key: Hashable) -> bool:
        """Whether the page was found changing less than `BUSY_SECONDS` ago."""
        until = self._busy.get(key)
        if until is None:
            return False
        if until < time.monotonic():
            del self._busy[key]
            return False
        return True

    def found_busy(self, key: Hashable) -> None:
        self._busy[key] = time.monotonic() + BUSY_SECONDS
        self._busy.move_to_end(key)
        while len(self._busy) > self._size:
            self._busy.popitem(last=False)

    def get(self, key: Hashable) -> tuple[str, T] | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        if kept.until < time.monotonic():
            del self._kept[key]
            return None
        self._kept.move_to_end(key)
        return kept.marker, kept.value

    def put(self, key: Hashable, marker: str, value: T) -> None:
        self._kept[key] = _Kept(marker, value, time.monotonic() + self._seconds)
        self._kept.move_to_end(key)
        while len(self._kept) > self._size:
            self._kept.popitem(last=False)

    def drop(self, key: Hashable) -> None:
        self._kept.pop(key, None)

    def clear(self) -> None:
        self._kept.clear()
        self._busy.clear()

    def __len__(self) -> int:
        return len(self._kept)
