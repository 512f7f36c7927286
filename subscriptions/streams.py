"""Per-subscriber event streams with conflation (SPEC §3: a slow subscriber gets the latest
snapshot per balance, never an unbounded queue).

A stream keeps at most one pending event per balance (the newest version) and at most
`max_balances` balances; past that the balance that waited longest is dropped, and its next
change brings the subscriber up to date again (every event is a full snapshot). Events at or
below the version already delivered for a balance are dropped, so a republished outbox row
or an out-of-date resync never goes backwards."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

Event = dict[str, Any]
BalanceKey = tuple[int, int | None]  # (pool id, End User id or None for the pool itself)

MAX_PENDING_BALANCES = 1_000
MAX_REMEMBERED_VERSIONS = 4_096


def balance_key(event: Event) -> BalanceKey:
    return (event["pool_id"], event["end_user_id"])


class ConflatingStream:
    def __init__(
        self,
        accept: Callable[[Event], bool],
        *,
        topic: str = "balance",
        key: Callable[[Event], Hashable] = balance_key,
        max_balances: int = MAX_PENDING_BALANCES,
    ) -> None:
        self.accept = accept
        self.topic = topic
        self.key = key
        self.max_balances = max_balances
        self.pending: OrderedDict[Hashable, Event] = OrderedDict()
        # Versions delivered, to drop republished or stale events (bounded, least recent out).
        self.delivered: OrderedDict[Hashable, int] = OrderedDict()
        self.wakeup = asyncio.Event()
        self.dropped = 0

    def offer_message(self, message: bytes) -> None:
        """A broker listener: never blocks, never grows past the bound."""
        envelope = json.loads(message)
        if envelope.get("topic") != self.topic:
            return
        self.offer(envelope["event"])

    def offer(self, event: Event) -> None:
        if not self.accept(event):
            return
        key = self.key(event)
        if event["version"] <= self.delivered.get(key, -1):
            return
        waiting = self.pending.get(key)
        if waiting is not None and waiting["version"] >= event["version"]:
            return
        self.pending[key] = event
        self.pending.move_to_end(key)
        if len(self.pending) > self.max_balances:
            self.pending.popitem(last=False)
            self.dropped += 1
        self.wakeup.set()

    async def events(self) -> AsyncIterator[Event]:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                _, event = self.pending.popitem(last=False)
                key = self.key(event)
                if event["version"] <= self.delivered.get(key, -1):
                    continue
                self._remember(key, event["version"])
                yield event

    def mark_delivered(self, event: Event) -> None:
        """Records a snapshot sent outside the stream (the first message, a resync)."""
        key = self.key(event)
        self._remember(key, max(event["version"], self.delivered.get(key, -1)))

    def _remember(self, key: Hashable, version: int) -> None:
        self.delivered[key] = version
        self.delivered.move_to_end(key)
        if len(self.delivered) > MAX_REMEMBERED_VERSIONS:
            self.delivered.popitem(last=False)
