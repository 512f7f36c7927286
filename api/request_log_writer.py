"""The request log writer: a bounded queue of drafts, flushed in batches by one task.

The middleware's `offer` is all a request pays: an append to a deque (or, when the queue is
full, a count of the dropped record: the service keeps serving). The flush task turns each
draft into a row (the GraphQL root fields each operation noted while it ran, the owning
application of a refused key, the End User named by the token or the mutation's `endUser`),
writes the batch in one statement, updates the metrics and publishes the rows to the live
tail. `close` flushes everything still queued (the lifespan's shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from api.auth import bearer_credential
from api.request_draft import RequestDraft
from models.accounts import InvalidCredential, split_key
from models.credits import EndUser
from models.end_user_tokens import TOKEN_PREFIX, InvalidToken, verify_token
from models.references import organization_of
from models.request_log import (
    MAX_ENDPOINT,
    LogRow,
    LogSource,
    clip,
    insert_entries,
    outcome_for,
)
from models.sql import single_statement
from models.tenancy import ApiKey
from subscriptions.request_log_tail import listened_applications, publish_entries

log = logging.getLogger("usagegraph.request_log")

BATCH = 2_000
_MISS_TTL = 60.0  # seconds a failed lookup (unknown key id, End User) is remembered
_CACHE_SIZE = 50_000
_RETRY_LIMIT = 5  # attempts at writing a batch while shutting down


class _Lookups:
    """Bounded caches of what never changes once it exists (key id -> owner, End User id
    <-> external id), remembering misses for a while so that junk costs one query a minute."""

    def __init__(self) -> None:
        self.values: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    async def get(self, key: Any, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        found = self.values.get(key)
        if found is not None and (found[1] is not None or now - found[0] < _MISS_TTL):
            return found[1]
        value = await load()
        self.values[key] = (now, value)
        self.values.move_to_end(key)
        if len(self.values) > _CACHE_SIZE:
            self.values.popitem(last=False)
        return value


def _as_id(value: Any) -> int | None:
    text = str(value) if isinstance(value, int | str) else ""
    return int(text) if text.isdigit() and 0 < len(text) < 19 else None


async def store_and_publish(rows: list[LogRow], broker: Any) -> None:
    """Writes rows, then publishes those of the applications someone tails (only then are
    their ids read back: a batch nobody watches is written with COPY)."""
    watched: set[int] = set()
    if broker is not None:
        try:
            applications = {r.application_id for r in rows if r.application_id is not None}
            watched = await listened_applications(broker, applications)
        except Exception as error:  # the tail is best effort; the rows are stored
            log.warning("request log tail: subscribers unknown (%s)", error)
    ids = await insert_entries(rows, returning=bool(watched))
    if not watched:
        return
    shown = [(row, entry_id) for row, entry_id in zip(rows, ids, strict=True)]
    shown = [(row, entry_id) for row, entry_id in shown if row.application_id in watched]
    try:
        await publish_entries(broker, [r for r, _ in shown], [i for _, i in shown])
    except Exception as error:
        log.warning("request log tail not published (%s)", error)


class RequestLogWriter:
    def __init__(
        self,
        *,
        secret: str,
        capacity: int = 100_000,
        flush_seconds: float = 0.2,
        broker: Any = None,
        metrics: Any = None,
    ) -> None:
        self.secret = secret
        self.capacity = capacity
        self.flush_seconds = flush_seconds
        self.broker = broker
        self.metrics = metrics
        self.pending: deque[RequestDraft] = deque()
        self.ready: deque[LogRow] = deque()  # rows needing no enrichment (outgoing calls)
        self.unwritten: list[LogRow] = []  # a batch whose write failed, retried first
        self.failures = 0  # consecutive failed writes of `unwritten`
        self.dropped = 0
        self.written = 0
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.stopping = False  # close() asks the flush task to end
        self.keys = _Lookups()
        self.end_users = _Lookups()
        self.flushing = asyncio.Lock()  # one flush at a time (the task, close, a test)

    # ---------------------------------------------------------------- the request path
    def offer(self, draft: RequestDraft) -> None:
        pending = self.pending
        if len(pending) >= self.capacity:
            self.dropped += 1
            return
        pending.append(draft)
        if len(pending) >= BATCH:
            self.wakeup.set()

    def offer_row(self, row: LogRow) -> None:
        """A record complete already: a call this service made (a webhook delivery)."""
        if len(self.ready) >= self.capacity:
            self.dropped += 1
            return
        self.ready.append(row)

    # ---------------------------------------------------------------- the flush task
    async def start(self) -> None:
        if self.task is None:
            self.stopping = False
            self.task = asyncio.create_task(self._run(), name="request-log-writer")

    async def close(self) -> None:
        """Stops the task, then writes whatever is still queued (retrying a failing write a
        few times before giving up on it)."""
        if self.task is not None:
            # Stopped only between flushes: a flush cut short would write twice a batch whose
            # commit it had not yet seen. The flag stops it too when the cancellation is lost
            # (Python 3.11's wait_for drops one that meets its wait's completion).
            self.stopping = True
            self.wakeup.set()
            async with self.flushing:
                self.task.cancel()  # it may be waiting out a back-off
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        for attempt in range(_RETRY_LIMIT):
            try:
                await self.flush()
                return
            except Exception:
                log.exception("request log: final flush failed (attempt %d)", attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
        lost = len(self.unwritten) + len(self.pending)
        self.dropped += lost
        log.error("request log: %d records could not be written at shutdown", lost)

    async def _run(self) -> None:
        backoff = 0.1
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self.flush_seconds)
            if self.stopping:
                return
            self.wakeup.clear()
            try:
                await self.flush()
                backoff = 0.1
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database away: keep the batch, retry
                log.warning("request log flush failed (%s); retrying in %.1fs", error, backoff)
                self.failures += 1
                if self.failures >= _RETRY_LIMIT:
                    await self.set_aside_refused_rows()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def set_aside_refused_rows(self) -> int:
        """A batch that keeps failing while the database answers holds a row the database
        refuses (a value out of range, say): write its rows one by one and drop, and count,
        only those refused, so one bad record cannot block the log. While the database is
        away this does nothing (the batch waits for it). The number of rows dropped."""
        async with self.flushing:
            try:
                await single_statement(lambda db: db.rows("SELECT 1"))
            except Exception:
                return 0
            refused = 0
            for row in self.unwritten:
                try:
                    await insert_entries([row])
                except Exception as error:
                    log.error("request log: a record was refused and dropped (%s)", error)
                    refused += 1
            self.written += len(self.unwritten) - refused
            self.dropped += refused
            self.unwritten = []
            self.failures = 0
            return refused

    async def flush(self) -> int:
        """Writes every queued record; the number written."""
        async with self.flushing:
            return await self._flush()

    async def _flush(self) -> int:
        written = 0
        while self.unwritten or self.pending or self.ready:
            if not self.unwritten and self.ready:
                count = min(len(self.ready), BATCH)
                self.unwritten = [self.ready.popleft() for _ in range(count)]
            elif not self.unwritten:
                # Taken off the queue once they are rows: an interrupted enrichment loses none.
                batch = list(itertools.islice(self.pending, BATCH))
                rows = [await self.row(draft) for draft in batch]
                for _ in batch:
                    self.pending.popleft()
                self.unwritten = rows
            rows = self.unwritten
            await store_and_publish(rows, self.broker)
            self.unwritten = []
            written += len(rows)
            self.written += len(rows)
            if self.metrics is not None:
                self.metrics.observe_rows(rows)
        return written

    # ---------------------------------------------------------------- enrichment
    async def row(self, draft: RequestDraft) -> LogRow:
        endpoint = f"{draft.method} {draft.route or draft.path}"
        operation_name = None
        named_application = named_end_user = None
        roots: list[str] = []
        for operation in draft.operations:
            operation_name = operation_name or operation.operation_name
            roots.extend(operation.root_fields)
            named_application = named_application or operation.application
            named_end_user = named_end_user or operation.end_user
        if roots:
            endpoint = f"{endpoint} {' '.join(dict.fromkeys(roots))}"
        if not draft.principal_known and draft.authorization is not None:
            await self._attribute_credential(draft)
        elif draft.application_id is None and draft.api_key_prefix is not None:
            owner = await self._key_owner(draft.api_key_prefix)
            if owner is not None:
                draft.organization_id, draft.application_id = owner
        if draft.application_id is None and draft.organization_id is not None:
            # An organization key: the application its request addressed, if it owns it.
            candidate = _as_id(named_application)
            if candidate is not None and await organization_of(candidate) == (
                draft.organization_id
            ):
                draft.application_id = candidate
        if draft.application_id is not None:
            await self._complete_end_user(draft, named_end_user)
        outcome = outcome_for(draft.status, draft.error_code)
        return LogRow(
            application_id=draft.application_id,
            organization_id=draft.organization_id,
            time=draft.time,
            method=draft.method,
            endpoint=clip(endpoint, MAX_ENDPOINT) or endpoint,
            operation_name=clip(operation_name, 200),
            end_user_id=draft.end_user_id,
            end_user_external_id=draft.end_user_external_id,
            api_key_prefix=draft.api_key_prefix,
            status=draft.status,
            outcome=outcome.value,
            error_code=draft.error_code,
            error_message=draft.error_message,
            latency_ms=round(draft.latency_ms, 3),
            request_id=draft.request_id,
            source=LogSource.API.value,
        )

    async def _key_owner(self, key_id: str) -> tuple[int, int | None] | None:
        async def load() -> tuple[int, int | None] | None:
            found = await ApiKey.filter(key_id=key_id).values("organization_id", "application_id")
            return (found[0]["organization_id"], found[0]["application_id"]) if found else None

        return await self.keys.get(key_id, load)

    async def _attribute_credential(self, draft: RequestDraft) -> None:
        """A request the authentication never saw (an unknown path, a crash before it): the
        key id names the application; a token does when its signature is ours."""
        assert draft.authorization is not None
        try:
            credential = bearer_credential(draft.authorization.decode("latin-1"))
        except InvalidCredential:
            return
        if credential.startswith(TOKEN_PREFIX):
            try:
                claims = verify_token(self.secret, credential)
                application_id: int | None = claims.application_id
                draft.end_user_id = draft.end_user_id or claims.end_user_id
            except InvalidToken as error:
                application_id = error.application_id
            if application_id is not None:
                draft.application_id = application_id
                draft.organization_id = await organization_of(application_id)
            return
        parts = split_key(credential)
        if parts is not None:
            draft.api_key_prefix = parts[0]
            owner = await self._key_owner(parts[0])
            if owner is not None:
                draft.organization_id, draft.application_id = owner

    async def _end_user_column(self, application_id: int, column: str, **where: Any) -> Any:
        """One column of an End User of the application (None when there is none), cached.
        A value no row can hold (a NUL, which PostgreSQL refuses in text) names none."""
        if any(isinstance(value, str) and "\x00" in value for value in where.values()):
            return None

        async def load() -> Any:
            found = await EndUser.filter(application_id=application_id, **where).values_list(
                column, flat=True
            )
            return found[0] if found else None

        return await self.end_users.get((application_id, column, *where.values()), load)

    async def _complete_end_user(self, draft: RequestDraft, named: dict[str, Any] | None) -> None:
        """Both the id and the external id of the End User the request was about, when the
        token or the arguments named one that exists in the application."""
        application_id = draft.application_id
        assert application_id is not None
        if draft.end_user_id is None and named is not None:
            external = named.get("externalId")
            if isinstance(external, str) and 0 < len(external) <= 200:
                draft.end_user_external_id = external
                draft.end_user_id = await self._end_user_column(
                    application_id, "id", external_id=external
                )
                return
            draft.end_user_id = _as_id(named.get("id"))
        if draft.end_user_id is not None and draft.end_user_external_id is None:
            draft.end_user_external_id = await self._end_user_column(
                application_id, "external_id", id=draft.end_user_id
            )
            if draft.end_user_external_id is None:
                draft.end_user_id = None  # not an End User of this application
