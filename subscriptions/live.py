"""What a live subscription resolver returns: `LiveEvents`, its topic's events as the
field's values.

Iterated, it authorises its topic, then yields each event of the topic as a value that
GraphQL executes for this subscriber alone: the stock path, over any transport. The
WebSocket transport (api/transport/) serves it without that per-subscriber execution: its
operations run with a `LiveClaim` as root value, and the executor (resolvers/runtime/)
hands a `LiveEvents` met there to the claim instead of iterating it. The transport then
sends the topic's events from the process's fan-out, rendered once per selection
(subscriptions/rendering.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from models.events import LiveEvent
from subscriptions.fanout import EVENTS, Topic
from subscriptions.realtime import Realtime

ToValue = Callable[[LiveEvent], Any]


@dataclass(frozen=True, slots=True, eq=False)
class LiveEvents:
    """`authorise()` checks the subscriber's access (raising its error) and names the
    topic; `to_value` makes an event the subscription field's value."""

    realtime: Realtime
    authorise: Callable[[], Awaitable[Topic]]
    to_value: ToValue

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._values()

    async def _values(self) -> AsyncIterator[Any]:
        topic = await self.authorise()
        async for event in self.realtime.feed(topic, EVENTS):
            yield self.to_value(event)

    async def claimed_by(self, claim: LiveClaim) -> AsyncIterator[Any]:
        """Authorises the topic (an error ends the stream as it would the values') and
        hands it to `claim`: a stream of no values."""
        claim.topic = await self.authorise()
        claim.to_value = self.to_value
        return
        yield  # an async generator: the error, if any, comes when it is iterated


@dataclass(slots=True)
class LiveClaim:
    """One WebSocket operation as the client sent it, and the topic its `LiveEvents`
    handed over (None: the operation was no live subscription, or it failed)."""

    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    topic: Topic | None = None
    to_value: ToValue | None = None
