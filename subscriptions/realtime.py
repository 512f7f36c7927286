"""The realtime side of one process: its broker, its outbox relay, and the fan-out of their
events to this process's subscribers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from subscriptions.broker import Broker, create_broker
from subscriptions.fanout import Fanout, Selection, Topic
from subscriptions.relay import OutboxRelay
from subscriptions.snapshots import topic_snapshots
from subscriptions.streams import event_key


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

    async def feed(self, topic: Topic, selection: Selection) -> AsyncIterator[Any]:
        """The topic's current snapshots (balances; none for alerts), then every change,
        each rendered by `selection` (once for all its subscribers); a slow reader gets the
        latest rendering per balance, from a bounded buffer."""
        # Join before reading the snapshots, so that no change falls between the two.
        with self.fanout.join(topic, selection) as subscriber:
            for snapshot in await topic_snapshots(topic):
                subscriber.mark_delivered(event_key(topic.kind, snapshot), snapshot["version"])
                yield await subscriber.render(snapshot)
            while True:
                for item in await subscriber.take():
                    yield item
