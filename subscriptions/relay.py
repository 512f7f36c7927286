"""The outbox relay: publishes the outbox's rows (models/outbox.py) after their transaction
committed (docs/ledger.md rule 6).

Exactly one relay publishes at a time across all processes (a PostgreSQL advisory lock held
by a dedicated connection; on SQLite there is one process). It publishes rows in id order,
which is commit order per balance (a balance's row lock is held until commit), and deletes
them afterwards (cheaper for PostgreSQL than stamping them; the ledger is the record). When
the holder dies its session ends, the lock is released and another process's relay takes
over; rows it published but did not delete are published again, which subscribers drop by
version. When the broker is down the relay keeps the rows and
retries with back-off until it is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

import asyncpg

from models.outbox import broker_message, pending_rows
from models.sql import outbox_hooks, single_statement
from models.webhook_events import message_hooks, settle_published
from subscriptions.broker import Broker, application_channel

log = logging.getLogger(__name__)

RELAY_LOCK_ID = 7461002
BATCH = 500
IDLE_POLL_SECONDS = 0.02  # how soon another process's commit is seen by the leader
LEADER_RETRY_SECONDS = 0.5
_ANY_PENDING = "SELECT EXISTS (SELECT 1 FROM outbox_event)"


class OutboxRelay:
    running: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()

    def __init__(self, broker: Broker, postgres_dsn: str | None) -> None:
        self.broker = broker
        self.postgres_dsn = postgres_dsn  # None: SQLite, this process is the only relay
        self.task: asyncio.Task[None] | None = None
        self.wake_event = asyncio.Event()
        self.lock_connection: asyncpg.Connection | None = None
        self.published = 0
        # Held: publishes (and so deletes) nothing until resumed; for maintenance, and for
        # tests that count the outbox rows a write leaves.
        self.held = False
        self.publishing = asyncio.Lock()

    async def start(self) -> None:
        outbox_hooks.append(self.wake)
        OutboxRelay.running.add(self)
        self.task = asyncio.create_task(self._run(), name="outbox-relay")

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            outbox_hooks.remove(self.wake)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self._release_leadership()

    def wake(self) -> None:
        self.wake_event.set()

    async def hold(self) -> None:
        """Stops publishing once the batch under way (if any) is done."""
        async with self.publishing:
            self.held = True

    def resume(self) -> None:
        self.held = False
        self.wake()

    @property
    def leader(self) -> bool:
        return self.postgres_dsn is None or self.lock_connection is not None

    async def _lead(self) -> bool:
        if self.postgres_dsn is None or self.lock_connection is not None:
            if self.lock_connection is not None and self.lock_connection.is_closed():
                self.lock_connection = None
                return False
            return True
        connection = await asyncpg.connect(self.postgres_dsn, timeout=5)
        if await connection.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_ID):
            self.lock_connection = connection
            log.info("this process now relays the outbox")
            return True
        await connection.close()
        return False

    async def _release_leadership(self) -> None:
        if self.lock_connection is not None:
            with contextlib.suppress(Exception):
                await self.lock_connection.close()  # ends the session: the lock goes with it
            self.lock_connection = None

    async def _run(self) -> None:
        backoff = 0.05
        polled = False  # whether this turn is a poll: no wake, nothing published last turn
        while True:
            try:
                if not await self._lead():
                    await asyncio.sleep(LEADER_RETRY_SECONDS)
                    continue
                async with self.publishing:
                    sent = 0 if self.held else await self._publish_any(polled)
                backoff = 0.05
                polled = False
                if sent < BATCH:
                    self.wake_event.clear()
                    try:  # (no task, as wait_for makes)
                        async with asyncio.timeout(IDLE_POLL_SECONDS):
                            await self.wake_event.wait()
                    except TimeoutError:
                        polled = sent == 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # broker or database away: keep the rows, retry
                log.warning("outbox relay paused (%s); retrying in %.2fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if self.lock_connection is not None and self.lock_connection.is_closed():
                    self.lock_connection = None

    async def _publish_any(self, polled: bool) -> int:
        """`publish_pending`; a poll (`polled`) asks first on the leader's own connection
        whether any row waits: finding none, the usual answer, then costs a statement on a
        connection that is idle anyway, not a pooled connection's loan and release (a tenth
        of this process's CPU when idle). A wake, or a turn after rows were published, reads
        them at once."""
        if (
            polled
            and self.lock_connection is not None
            and not await self.lock_connection.fetchval(_ANY_PENDING)
        ):
            return 0
        return await self.publish_pending()

    async def publish_pending(self) -> int:
        """Publishes up to BATCH unpublished rows in id order; the number published."""
        rows = await single_statement(lambda db: pending_rows(db, BATCH))
        if not rows:
            return 0
        for row in rows:
            await self.broker.publish(
                application_channel(row["application_id"]), broker_message(row)
            )
        # Deleted with their webhook messages written, in one transaction (exactly one
        # message per committed event and endpoint, docs/webhooks.md).
        if await settle_published(rows):
            for hook in message_hooks:
                hook()  # this process's deliverer need not wait for its next poll
        self.published += len(rows)
        return len(rows)
