"""One process's fan-out of balance and alert events to its subscribers, rendered once per
selection.

A subscriber is a topic (what it watches, already authorised: an application, maybe a pool,
maybe one End User) and a selection (how an event becomes the text sent to it: the GraphQL
document, operation and the variables that shape the result). Subscribers of an
application share one broker listener, which decodes each message once; one dispatcher task
per application routes the event through an index on (kind, End User, pool) to the
subscribers whose topic wants it, renders it once per selection among them and offers the
same text to each one's bounded, conflating buffer, which its own sender drains. So an event
costs one rendering per distinct selection, not one per subscriber, and a slow subscriber
(or a slow rendering) never holds up the broker's reader or the other subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from models.events import KINDS, AlertRaised, LiveEvent, event_from_json
from models.transient import is_transient
from subscriptions.broker import Broker, application_channel
from subscriptions.streams import ConflatingBuffer, Key

log = logging.getLogger(__name__)

MAX_INTAKE_KEYS = 10_000  # events waiting for the dispatcher, newest per balance
DISPATCHED_VERSIONS = 65_536  # versions remembered per application, to drop a republished row

# A rendering that hit a transient failure (models/transient.py) is tried again after
# these pauses, never sent degraded; past them its balances are read again (a resync,
# itself retried with back-off while the database is away).
RENDER_RETRY_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
RESYNC_FIRST_PAUSE = 0.5
RESYNC_MAX_PAUSE = 5.0

Render = Callable[[LiveEvent], Awaitable[Any]]
Route = tuple[str, int | None, str | None]  # (kind, End User or None for all, pool or None)


@dataclass(frozen=True, slots=True)
class Topic:
    """Balances: with an End User, that End User's balances; without, the pool balances and
    every End User balance of the application. Either way of `pool` only, when given.
    Alerts: every alert of the application."""

    application_id: int
    kind: str = "balance"
    pool: str | None = None
    end_user_id: int | None = None

    @property
    def route(self) -> Route:
        return (self.kind, self.end_user_id, self.pool)


def routes_of(event: LiveEvent) -> tuple[Route, ...]:
    """The routes of every topic that wants `event`."""
    end_user = event.end_user_id
    users = (None,) if end_user is None else (end_user, None)
    return tuple((event.topic, user, pool) for user in users for pool in (event.pool, None))


@dataclass(frozen=True, slots=True, eq=False)
class Selection:
    """How events become what subscribers receive. Subscribers with equal keys share one
    rendering of each event; `make_render` is called once, by the first of them."""

    key: Hashable
    make_render: Callable[[], Render]


async def render_retrying(
    render: Render, event: LiveEvent, superseded: Callable[[], bool] = lambda: False
) -> Any:
    """`render(event)`, tried again with back-off while it fails for a transient reason
    (the database or the broker briefly away); its last failure is raised, and so is a
    rendering that is not transient or whose event is `superseded` by a newer one."""
    for pause in RENDER_RETRY_PAUSES:
        try:
            return await render(event)
        except Exception as error:
            if not is_transient(error) or superseded():
                raise
            log.warning("rendering failed (%s); retrying in %.2fs", error, pause)
        await asyncio.sleep(pause)
    return await render(event)


async def _as_is(event: LiveEvent) -> LiveEvent:
    return event


# The event itself, for readers that render it themselves.
EVENTS = Selection(("events",), lambda: _as_is)


class _Group:
    """The subscribers of one selection in an application: one rendering for all."""

    __slots__ = ("count", "key", "render")

    def __init__(self, key: Hashable, render: Render) -> None:
        self.key = key
        self.render = render
        self.count = 0


class Subscriber(ConflatingBuffer):
    """`wake`, when set, is called whenever an offer leaves items pending: a reader that
    runs no task while idle starts one there, instead of waiting in `take()`."""

    __slots__ = ("group", "topic", "wake")

    def __init__(self, topic: Topic, group: _Group) -> None:
        super().__init__()
        self.topic = topic
        self.group = group
        self.wake: Callable[[], None] | None = None

    def offer(self, key: Key, version: int, item: Any) -> None:
        super().offer(key, version, item)
        if self.wake is not None and self.pending:
            self.wake()

    @property
    def render(self) -> Render:
        return self.group.render


# Subscribers of one route and selection: most often one alone (an End User's widget),
# held as such, which costs an idle subscriber much less than a set of one.
Bucket = Subscriber | set[Subscriber]


class _Application:
    """The subscribers of one application, indexed by route and selection."""

    def __init__(self, application_id: int) -> None:
        self.application_id = application_id
        self.groups: dict[Hashable, _Group] = {}
        self.members: dict[tuple[Route, Hashable], Bucket] = {}
        self.count = 0
        self.renderings = 0
        self.intake = ConflatingBuffer(MAX_INTAKE_KEYS)
        self.dispatched: OrderedDict[Key, int] = OrderedDict()
        self.listening = contextlib.ExitStack()
        self.dispatcher: asyncio.Task[None] | None = None
        # Called with an event that could not be rendered for a transient reason: a
        # balance is read again and dispatched (Fanout's resync), an alert offered again.
        self.repair: Callable[[LiveEvent], None] = lambda event: None
        self.repairing: asyncio.Task[None] | None = None

    def add(self, topic: Topic, selection: Selection) -> Subscriber:
        group = self.groups.get(selection.key)
        if group is None:
            group = self.groups[selection.key] = _Group(selection.key, selection.make_render())
        group.count += 1
        subscriber = Subscriber(topic, group)
        slot = (topic.route, group.key)
        bucket = self.members.get(slot)
        if bucket is None:
            self.members[slot] = subscriber
        elif isinstance(bucket, set):
            bucket.add(subscriber)
        else:
            self.members[slot] = {bucket, subscriber}
        self.count += 1
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        group = subscriber.group
        slot = (subscriber.topic.route, group.key)
        bucket = self.members[slot]
        if isinstance(bucket, set) and len(bucket) > 1:
            bucket.discard(subscriber)
        else:
            del self.members[slot]
        group.count -= 1
        if group.count == 0:
            del self.groups[group.key]
        self.count -= 1

    def on_message(self, message: bytes) -> None:
        """The broker listener: one decoding per message, whatever the subscriber count."""
        try:
            envelope = json.loads(message)
            if envelope["topic"] in KINDS:
                event = event_from_json(envelope["topic"], envelope["event"])
                self.intake.offer(event.key, event.version, event)
        except (ValueError, KeyError, TypeError):
            log.exception("malformed message on application %s", self.application_id)

    async def dispatch_forever(self) -> None:
        while True:
            for event in await self.intake.take():
                try:
                    await self.dispatch(event)
                except Exception:  # a malformed event must not stop the application's stream
                    log.exception("dispatch failed on application %s", self.application_id)

    async def dispatch(self, event: LiveEvent) -> None:
        key, version = event.key, event.version
        if version <= self.dispatched.get(key, -1):
            return  # republished by a relay that took over, or an out-of-date resync
        routes = routes_of(event)
        rendered_by_all = True

        def superseded() -> bool:  # a newer version of it came meanwhile: that one goes
            waiting = self.intake.pending.get(key)
            return waiting is not None and waiting[0] > version

        for group in tuple(self.groups.values()):  # a few: one per distinct selection
            buckets = [self.members.get((route, group.key)) for route in routes]
            if not any(buckets):
                continue
            self.renderings += 1
            try:
                item = await render_retrying(group.render, event, superseded)
            except Exception as error:  # the other selections still get the event
                rendered_by_all = False
                if not is_transient(error):
                    log.exception("rendering failed on application %s", self.application_id)
                elif not superseded():
                    log.warning("rendering failed (%s); its balances will be read again", error)
                    self.repair(event)
                continue
            for bucket in buckets:
                if isinstance(bucket, Subscriber):
                    bucket.offer(key, version, item)
                elif bucket:
                    for subscriber in tuple(bucket):  # some may leave while it is sent
                        subscriber.offer(key, version, item)
        if rendered_by_all:  # else a resync of this version is still wanted
            self.dispatched[key] = version
            self.dispatched.move_to_end(key)
            if len(self.dispatched) > DISPATCHED_VERSIONS:
                self.dispatched.popitem(last=False)


class Fanout:
    """Every subscriber of this process. `snapshots(topic)` reads a topic's current events
    (used to bring everyone up to date after the broker lost messages)."""

    def __init__(
        self, broker: Broker, snapshots: Callable[[Topic], Awaitable[Sequence[LiveEvent]]]
    ) -> None:
        self.broker = broker
        self.snapshots = snapshots
        self.applications: dict[int, _Application] = {}
        self.resyncs: set[asyncio.Task[None]] = set()
        broker.on_reconnect(self._resync_everyone)

    @property
    def subscriber_count(self) -> int:
        return sum(application.count for application in self.applications.values())

    def renderings(self, application_id: int) -> int:
        """Events rendered for the application's subscribers since its first one joined."""
        application = self.applications.get(application_id)
        return 0 if application is None else application.renderings

    async def join(self, topic: Topic, selection: Selection) -> Subscriber:
        """A subscriber of `topic`, receiving `selection`'s renderings of every event
        published from the moment this returns (the broker's subscription is live then),
        until it leaves."""
        application = self.applications.get(topic.application_id)
        if application is None:
            application = self._open(topic.application_id)
        subscriber = application.add(topic, selection)
        try:
            await self.broker.listening(application_channel(topic.application_id))
        except BaseException:
            self.leave(subscriber)
            raise
        return subscriber

    def leave(self, subscriber: Subscriber) -> None:
        application = self.applications[subscriber.topic.application_id]
        application.remove(subscriber)
        if application.count == 0:
            self._close(application)

    def _open(self, application_id: int) -> _Application:
        application = _Application(application_id)
        application.listening.enter_context(
            self.broker.listen(application_channel(application_id), application.on_message)
        )
        application.dispatcher = asyncio.get_running_loop().create_task(
            application.dispatch_forever(), name=f"fanout-{application_id}"
        )
        application.repair = lambda event: self._repair(application, event)
        self.applications[application_id] = application
        return application

    def _close(self, application: _Application) -> None:
        del self.applications[application.application_id]
        application.listening.close()
        if application.dispatcher is not None:
            application.dispatcher.cancel()

    def _resync_everyone(self) -> None:
        for application in list(self.applications.values()):
            self._resync_later(application)

    def _repair(self, application: _Application, event: LiveEvent) -> None:
        if isinstance(event, AlertRaised):  # no snapshot to read: it goes through again
            retry = partial(application.intake.offer, event.key, event.version, event)
            asyncio.get_running_loop().call_later(RESYNC_FIRST_PAUSE, retry)
        elif application.repairing is None or application.repairing.done():
            application.repairing = self._resync_later(application)  # one at a time

    def _resync_later(self, application: _Application) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._resync(application))
        self.resyncs.add(task)
        task.add_done_callback(self.resyncs.discard)
        return task

    async def _resync(self, application: _Application) -> None:
        """After missed or unrendered events: every topic's snapshots go through the
        dispatcher like any event; those not newer than what was dispatched are dropped
        there. Tried again, with back-off, for as long as the database is away and the
        application has subscribers."""
        pause = RESYNC_FIRST_PAUSE
        while self.applications.get(application.application_id) is application:
            topics = {
                Topic(application.application_id, kind, pool, end_user)
                for (kind, end_user, pool), _ in application.members
                if kind == "balance"
            }
            try:
                for topic in topics:
                    for event in await self.snapshots(topic):
                        application.intake.offer(event.key, event.version, event)
                return
            except Exception as error:
                if not is_transient(error):
                    log.exception("resync of application %s failed", application.application_id)
                    return
                log.warning("resync failed (%s); retrying in %.2fs", error, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESYNC_MAX_PAUSE)
