"""What a report has read of the rollups, kept per process until the next fold.

The rollups change only when a fold (or a rebuild) updates the rollup state row in the same
transaction (`models.rollups`), so their rows are a function of that row's version: the
transaction that last wrote it (`xmin`, which taking the row FOR UPDATE leaves alone) and the
watermark. A statement that may use kept rollup sums passes the version it holds: it reads
the rollups only when the version it finds in its own snapshot differs, and always answers
that version and the live tail. Every answer stays what the ledger says at the statement's
snapshot; the rollups are read once per fold instead of once per request. PostgreSQL only
(SQLite has no row versions)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

# The rollup state's version, as two BIGINTs of its row: the transaction that wrote the row
# last and the watermark in microseconds since the epoch.
_XMIN = "CAST(CAST(xmin AS TEXT) AS BIGINT)"
_WATERMARK = "CAST(extract(epoch FROM watermark) * 1000000 AS BIGINT)"
_STATE = "FROM rollup_state WHERE id = 1"
Version = tuple[int, int]
NONE: Version = (-1, -1)  # the version of nothing kept: every statement reads


def version_row(*rest: str) -> str:
    """A SELECT of the rollup state's version (two columns) followed by the columns `rest`."""
    return f"SELECT {_XMIN}, {_WATERMARK}, {', '.join(rest)} {_STATE}"


def unchanged(first: str, second: str) -> str:
    """SQL true when the rollup state's version is the one the parameters `first` and
    `second` name (a one-time filter: the rollups are not read at all when it holds)."""
    return f"EXISTS (SELECT 1 {_STATE} AND {_XMIN} = {first} AND {_WATERMARK} = {second})"


class FoldedSums:
    """Rollup sums by what was asked (a hashable key), each with the state version it was
    read at; the least recently used dropped beyond `size` keys."""

    __slots__ = ("_kept", "size")

    def __init__(self, size: int = 128) -> None:
        self._kept: OrderedDict[Hashable, tuple[Version, Any]] = OrderedDict()
        self.size = size

    def kept(self, key: Hashable) -> tuple[Version, Any]:
        """The version and value kept for `key`: (NONE, None) when nothing is."""
        found = self._kept.get(key)
        if found is None:
            return NONE, None
        self._kept.move_to_end(key)
        return found

    def put(self, key: Hashable, version: Version, value: Any) -> None:
        self._kept[key] = (version, value)
        self._kept.move_to_end(key)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)

    def clear(self) -> None:
        self._kept.clear()
