"""How a subscription resolver hands its events over.

Over WebSocket (api/transport/) every operation runs with a `LiveFeed` as its root value.
A subscription resolver checks access, then hands its topic and its event type to the feed
and ends without yielding: the handler then sends the topic's events rendered once per
selection, shared with every subscriber of the same document, operation and shaping
variables, instead of executing the selection per subscriber. Anywhere else (no feed) the
resolver yields the events itself and Strawberry executes each one."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from models.events import LiveEvent
from resolvers.context import Info
from subscriptions.fanout import EVENTS, Topic

ToObject = Callable[[LiveEvent], Any]


@dataclass(slots=True)
class LiveFeed:
    """One WebSocket operation as the client sent it, and what its resolver handed over."""

    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    topic: Topic | None = None
    to_object: ToObject | None = None  # an event as the subscription field's type


async def live_events(info: Info, topic: Topic, to_object: ToObject) -> AsyncGenerator[Any, None]:
    """The resolver's stream for `topic` (already authorised)."""
    feed = info.root_value
    if isinstance(feed, LiveFeed):
        feed.topic, feed.to_object = topic, to_object
        return
    async for event in info.context.realtime.feed(topic, EVENTS):
        yield to_object(event)
