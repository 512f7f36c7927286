"""The realtime side of one process: its broker, its outbox relay, and the balance event
streams its subscribers read."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from subscriptions.broker import Broker, application_channel, create_broker
from subscriptions.relay import OutboxRelay
from subscriptions.snapshots import end_user_snapshots, pool_snapshots
from subscriptions.streams import ConflatingStream, Event

log = logging.getLogger(__name__)


class Realtime:
    def __init__(self, broker: Broker, relay: OutboxRelay) -> None:
        self.broker = broker
        self.relay = relay
        self.streams: dict[ConflatingStream, tuple[int, str | None, int | None]] = {}
        broker.on_reconnect(self._resync_everyone)

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
        return len(self.streams)

    async def balance_events(
        self, application_id: int, pool_key: str | None, end_user_id: int | None
    ) -> AsyncIterator[Event]:
        """The current snapshot(s), then every change, conflated per balance. Without an
        End User: the pool events and every End User event of the application."""

        def accept(event: Event) -> bool:
            if pool_key is not None and event["pool"] != pool_key:
                return False
            return end_user_id is None or event["end_user_id"] == end_user_id

        stream = ConflatingStream(accept)
        # Listen before reading the snapshot, so that no change falls between the two.
        with self.broker.listen(application_channel(application_id), stream.offer_message):
            self.streams[stream] = (application_id, pool_key, end_user_id)
            try:
                for snapshot in await _snapshots(application_id, pool_key, end_user_id):
                    stream.mark_delivered(snapshot)
                    yield snapshot
                async for event in stream.events():
                    yield event
            finally:
                self.streams.pop(stream, None)

    async def alert_events(self, application_id: int) -> AsyncIterator[Event]:
        """Every alert of the application from now on (bounded; alerts are not conflated,
        the oldest waiting ones are dropped past the bound)."""
        stream = ConflatingStream(lambda event: True, topic="alert", key=lambda e: e["id"])
        with self.broker.listen(application_channel(application_id), stream.offer_message):
            async for event in stream.events():
                yield event

    def _resync_everyone(self) -> None:
        for stream, (application_id, pool_key, end_user_id) in list(self.streams.items()):
            asyncio.get_running_loop().create_task(
                _resync(stream, application_id, pool_key, end_user_id)
            )


async def _snapshots(
    application_id: int, pool_key: str | None, end_user_id: int | None
) -> list[Event]:
    if end_user_id is None:
        return await pool_snapshots(application_id, pool_key)
    return await end_user_snapshots(application_id, end_user_id, pool_key)


async def _resync(
    stream: ConflatingStream, application_id: int, pool_key: str | None, end_user_id: int | None
) -> None:
    try:
        for snapshot in await _snapshots(application_id, pool_key, end_user_id):
            stream.offer(snapshot)  # dropped unless newer than what was delivered
    except Exception:
        log.exception("resync after a broker reconnect failed")
