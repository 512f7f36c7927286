"""Bounded, conflating buffers (docs/realtime.md: a slow subscriber gets the latest snapshot per
balance, never an unbounded queue).

A buffer keeps at most one pending item per key (a balance, or an alert), the one of the
newest version, and at most `bound` keys; past that the key that waited longest is dropped,
and its next change brings the reader up to date again (every event is a full snapshot).
What conflates is an event's `key` (models/events.py): a balance; an alert is its own key.
Items are whatever the owner buffers: the events themselves, or their rendered text."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

Key = Hashable

MAX_PENDING_KEYS = 1_000


class ConflatingBuffer:
    __slots__ = ("bound", "dropped", "floors", "pending", "waiter")

    def __init__(self, bound: int = MAX_PENDING_KEYS) -> None:
        self.bound = bound
        self.pending: dict[Key, tuple[int, Any]] = {}
        # Versions already delivered outside the buffer (a first snapshot): anything at or
        # below them is stale. A key leaves as soon as a newer version is offered. A few
        # pairs at most, kept by every idle subscriber: a tuple is the smallest holder.
        self.floors: tuple[tuple[Key, int], ...] = ()
        self.waiter: asyncio.Future[None] | None = None
        self.dropped = 0

    def offer(self, key: Key, version: int, item: Any) -> None:
        """Never blocks, never grows past the bound."""
        for floor in self.floors:
            if floor[0] == key:
                if version <= floor[1]:
                    return
                self.floors = tuple(f for f in self.floors if f is not floor)
                break
        waiting = self.pending.pop(key, None)
        if waiting is not None and waiting[0] >= version:
            self.pending[key] = waiting
            return
        self.pending[key] = (version, item)  # (re)inserted last: the order of arrival
        if len(self.pending) > self.bound:
            del self.pending[next(iter(self.pending))]
            self.dropped += 1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def mark_delivered(self, key: Key, version: int) -> None:
        """Records an item of `key` delivered outside the buffer, at `version`."""
        for floor in self.floors:
            if floor[0] == key:
                version = max(version, floor[1])
        self.floors = (*(f for f in self.floors if f[0] != key), (key, version))
        waiting = self.pending.get(key)
        if waiting is not None and waiting[0] <= version:
            del self.pending[key]

    async def take(self) -> list[Any]:
        """Every pending item, oldest first; waits for at least one."""
        while not self.pending:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.take_now()

    def take_now(self) -> list[Any]:
        """Every pending item, oldest first, without waiting (maybe none)."""
        items = [item for _, item in self.pending.values()]
        self.pending = {}
        return items
