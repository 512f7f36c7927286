"""The live request log (`requestLogTail`): the writer publishes each written batch, one
message per application, on that application's log channel through the broker (so a
subscriber on any process sees the records written by every process); each subscriber keeps
a bounded buffer and, when it falls behind, loses the oldest records (counted), never
slowing the writer or growing without bound."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from models.events import RequestLogged
from models.request_log import LogRow
from subscriptions.broker import Broker

MAX_PENDING = 1_000


def request_log_channel(application_id: int) -> str:
    return f"usagegraph:log:{application_id}"


async def listened_applications(broker: Broker, application_ids: set[int]) -> set[int]:
    """The applications whose log channel has a subscriber in some process (one Redis
    round trip for them all), so that a batch nobody watches is not serialized at all."""
    if not application_ids:
        return set()
    client = getattr(broker, "client", None)
    if client is None:  # in-process: this process's listeners are all there are
        listeners = broker.hub.listeners  # type: ignore[attr-defined]
        return {a for a in application_ids if listeners.get(request_log_channel(a))}
    ordered = sorted(application_ids)
    counts = await client.pubsub_numsub(*(request_log_channel(a) for a in ordered))
    return {a for a, (_, count) in zip(ordered, counts, strict=True) if count}


async def publish_entries(broker: Broker, rows: Sequence[LogRow], ids: Sequence[int]) -> None:
    """One message per application with its rows of the batch (rows without one are not
    published: no subscriber could be entitled to them)."""
    by_application: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry_id, row in zip(ids, rows, strict=True):
        if row.application_id is not None:
            by_application[row.application_id].append(RequestLogged(entry_id, row).to_json())
    for application_id, entries in by_application.items():
        message = json.dumps({"entries": entries}, separators=(",", ":"))
        await broker.publish(request_log_channel(application_id), message.encode())


class TailBuffer:
    """A subscriber's entries not yet sent (at most `bound`; the oldest go first)."""

    def __init__(self, accept: Callable[[RequestLogged], bool], bound: int = MAX_PENDING) -> None:
        self.accept = accept
        self.entries: deque[RequestLogged] = deque()
        self.bound = bound
        self.dropped = 0
        self.wakeup = asyncio.Event()

    def offer_message(self, message: bytes) -> None:
        for raw in json.loads(message)["entries"]:
            entry = RequestLogged.from_json(raw)
            if not self.accept(entry):
                continue
            if len(self.entries) >= self.bound:
                self.entries.popleft()
                self.dropped += 1
            self.entries.append(entry)
        if self.entries:
            self.wakeup.set()

    async def drain(self) -> AsyncIterator[RequestLogged]:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.entries:
                yield self.entries.popleft()


async def tail_entries(
    broker: Broker, application_id: int, accept: Callable[[RequestLogged], bool]
) -> AsyncIterator[RequestLogged]:
    """Every entry of the application written from now on that `accept` takes."""
    buffer = TailBuffer(accept)
    with broker.listen(request_log_channel(application_id), buffer.offer_message):
        async for entry in buffer.drain():
            yield entry
