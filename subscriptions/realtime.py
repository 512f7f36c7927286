"""The realtime side of one process: its broker, its outbox relay, and the fan-out of their
events to this process's subscribers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from subscriptions.broker import Broker, create_broker
from subscriptions.fanout import Fanout, Selection, Subscriber, Topic, render_retrying
from subscriptions.relay import OutboxRelay
from subscriptions.snapshots import topic_snapshots


class Realtime:
    def __init__(self, broker: Broker, relay: OutboxRelay) -> None:
        self.broker = broker
        self.relay = relay
        self.fanout = Fanout(broker, topic_snapshots)

    @classmethod
    def create(cls, redis_url: str | None, postgres_dsn: str | None) -> Realtime:
        broker = create_broker(redis_url)
        return cls(broker, OutboxRelay(broker, postgres_dsn))

    async def start(self) -> None:
        await self.broker.start()
        await self.relay.start()

    async def close(self) -> None:
        await self.relay.close()
        await self.broker.close()

    @property
    def subscriber_count(self) -> int:
        return self.fanout.subscriber_count

    async def subscribe(self, topic: Topic, selection: Selection) -> tuple[Subscriber, list[Any]]:
        """Joins `topic`: the subscriber, and its first items, the topic's current snapshots
        (balances; none for alerts). Then `subscriber.take()` gives every change, rendered
        by `selection` (once for all its subscribers); a slow reader gets the latest
        rendering per balance, from a bounded buffer. `leave` it at the end."""
        # Join (the broker's subscription live) before reading the snapshots, so that no
        # change falls between the two.
        subscriber = await self.fanout.join(topic, selection)
        try:
            first = []
            for snapshot in await topic_snapshots(topic):
                first.append(await render_retrying(subscriber.render, snapshot))
                subscriber.mark_delivered(snapshot.key, snapshot.version)
            return subscriber, first
        except BaseException:
            self.fanout.leave(subscriber)
            raise

    def leave(self, subscriber: Subscriber) -> None:
        self.fanout.leave(subscriber)

    async def feed(self, topic: Topic, selection: Selection) -> AsyncIterator[Any]:
        """`subscribe`, as an iterator."""
        subscriber, items = await self.subscribe(topic, selection)
        try:
            while True:
                for item in items:
                    yield item
                items = await subscriber.take()
        finally:
            self.leave(subscriber)
