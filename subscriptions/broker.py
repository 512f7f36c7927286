"""The broker: how balance and alert events reach every process's subscribers.

One interface, two implementations: in-process (the embedded default, one process) and
Redis pub/sub (several processes). Either way a process holds one local hub that fans a
channel's messages out to that process's listeners; with Redis the process holds one
subscription connection, subscribed to the channels its listeners need.

Listeners are plain callables that must not block (they put the message into their own
bounded buffer); the hub never waits for a slow subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

Listener = Callable[[bytes], None]
ReconnectHook = Callable[[], None]
SUBSCRIBE_TIMEOUT_SECONDS = 2.0


def application_channel(application_id: int) -> str:
    return f"usagegraph:app:{application_id}"


class Broker(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, channel: str, message: bytes) -> None:
        """Delivers to every process's listeners of `channel`; raises when it cannot."""

    def listen(self, channel: str, listener: Listener) -> contextlib.AbstractContextManager[None]:
        """Registers `listener` on `channel` for the duration of the `with` block."""

    async def listening(self, channel: str) -> None:
        """Returns once what is published on `channel` from now on reaches its listeners
        (or, with the connection lost meanwhile, once the reconnect hooks are due)."""

    def on_reconnect(self, hook: ReconnectHook) -> None:
        """`hook` runs after messages may have been missed (a lost Redis connection)."""


class _Hub:
    """This process's listeners by channel."""

    def __init__(self) -> None:
        self.listeners: dict[str, set[Listener]] = defaultdict(set)

    def dispatch(self, channel: str, message: bytes) -> None:
        for listener in tuple(self.listeners.get(channel, ())):
            try:
                listener(message)
            except Exception:  # one broken listener must not starve the others
                log.exception("listener of %s failed", channel)

    def add(self, channel: str, listener: Listener) -> bool:
        """Adds; True when it is the channel's first listener."""
        first = channel not in self.listeners or not self.listeners[channel]
        self.listeners[channel].add(listener)
        return first

    def remove(self, channel: str, listener: Listener) -> bool:
        """Removes; True when the channel has no listener left."""
        listeners = self.listeners.get(channel)
        if listeners is None:
            return False
        listeners.discard(listener)
        if not listeners:
            del self.listeners[channel]
            return True
        return False

    @property
    def listener_count(self) -> int:
        return sum(len(listeners) for listeners in self.listeners.values())


class InProcessBroker:
    """The embedded default: publishing is a local dispatch."""

    def __init__(self) -> None:
        self.hub = _Hub()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, channel: str, message: bytes) -> None:
        self.hub.dispatch(channel, message)

    @contextlib.contextmanager
    def listen(self, channel: str, listener: Listener) -> Iterator[None]:
        self.hub.add(channel, listener)
        try:
            yield
        finally:
            self.hub.remove(channel, listener)

    async def listening(self, channel: str) -> None:
        return None  # a local dispatch: live as soon as added

    def on_reconnect(self, hook: ReconnectHook) -> None:
        return None  # nothing is ever missed


class RedisBroker:
    """Redis pub/sub with one subscription connection per process. redis-py's PubSub does
    not reconnect reliably by itself, so this owns the reader loop: on a lost connection it
    backs off, opens a new subscription, re-subscribes every channel in use and tells the
    reconnect hooks, whose subscribers then resync from the database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.hub = _Hub()
        self.client: redis.Redis | None = None
        self.pubsub: redis.client.PubSub | None = None
        self.reader: asyncio.Task[None] | None = None
        self.hooks: list[ReconnectHook] = []
        self.connected = asyncio.Event()
        self._publish_lock = asyncio.Lock()
        # SUBSCRIBE commands sent per channel and not yet confirmed by Redis, and who waits
        # for their confirmation (a channel is live once all of them are).
        self._unconfirmed: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def start(self) -> None:
        self.client = redis.Redis.from_url(self.url, socket_connect_timeout=2)
        self.reader = asyncio.create_task(self._read_forever(), name="redis-broker-reader")

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        await self._drop_pubsub()
        if self.client is not None:
            await self.client.aclose()

    async def publish(self, channel: str, message: bytes) -> None:
        assert self.client is not None, "broker not started"
        # One connection, in order: redis-py's pool is capped, and order matters per balance.
        async with self._publish_lock:
            await self.client.publish(channel, message)

    @contextlib.contextmanager
    def listen(self, channel: str, listener: Listener) -> Iterator[None]:
        if self.hub.add(channel, listener):
            self._subscription_changed("subscribe", channel)
        try:
            yield
        finally:
            if self.hub.remove(channel, listener):
                self._subscription_changed("unsubscribe", channel)

    async def listening(self, channel: str) -> None:
        if not self.connected.is_set() or not self._unconfirmed.get(channel):
            # live, or to be subscribed by the reader's reconnect, whose hooks resync
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        with contextlib.suppress(TimeoutError):  # a lost reply: the reader's reconnect resyncs
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT_SECONDS)

    def on_reconnect(self, hook: ReconnectHook) -> None:
        self.hooks.append(hook)

    def _subscription_changed(self, action: str, channel: str) -> None:
        pubsub = self.pubsub
        if pubsub is None or not self.connected.is_set():
            return  # the reader subscribes every channel in use when it (re)connects
        if action == "subscribe":
            self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1

        async def change() -> None:
            try:
                await getattr(pubsub, action)(channel)
            except RedisError:
                log.warning("could not %s %s; the reader will resync", action, channel)

        asyncio.get_running_loop().create_task(change())

    def _confirmed(self, channel: str) -> None:
        left = self._unconfirmed.get(channel, 0) - 1
        if left > 0:
            self._unconfirmed[channel] = left
            return
        self._unconfirmed.pop(channel, None)
        for waiter in self._waiters.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _release_waiters(self) -> None:
        self._unconfirmed.clear()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._waiters.clear()

    async def _drop_pubsub(self) -> None:
        self.connected.clear()
        self._release_waiters()  # the reconnect subscribes their channels and resyncs
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                await self.pubsub.aclose()
            self.pubsub = None

    async def _read_forever(self) -> None:
        backoff = 0.05
        first = True
        while True:
            try:
                assert self.client is not None
                self.pubsub = self.client.pubsub()
                # A placeholder channel keeps the connection in subscribed mode.
                channels = list(self.hub.listeners)
                await self.pubsub.subscribe("usagegraph:alive", *channels)
                self.connected.set()
                added = [channel for channel in self.hub.listeners if channel not in channels]
                if added:  # listeners added meanwhile, not yet subscribed by anyone
                    await self.pubsub.subscribe(*added)
                if not first:
                    log.warning("Redis subscription restored")
                    for hook in self.hooks:
                        hook()
                first = False
                backoff = 0.05
                while True:
                    message = await self.pubsub.get_message(timeout=1.0)
                    if message is None or message["type"] not in ("message", "subscribe"):
                        continue
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    if message["type"] == "subscribe":
                        self._confirmed(channel)
                    else:
                        self.hub.dispatch(channel, message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                log.warning("Redis subscription lost (%s); retrying in %.2fs", error, backoff)
            except RedisError:
                log.exception("Redis subscription failed; retrying in %.2fs", backoff)
            await self._drop_pubsub()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


def create_broker(redis_url: str | None) -> Broker:
    return RedisBroker(redis_url) if redis_url else InProcessBroker()
