"""The webhook messages' queue (docs/webhooks.md#delivery): what is due, who holds it, and
what each attempt did.

Per endpoint only its oldest pending message (the head) may be sent, so a receiver sees an
endpoint's messages in id order: the next one waits while the head is retried. A deliverer
claims heads by stamping a lease in one conditional UPDATE (of concurrent claimers, one
wins each row, on PostgreSQL without waiting on another's: SKIP LOCKED); a lease that runs
out (a process killed mid-send) makes the head due again, so a message is sent at least
once, and its `webhook-id` lets the receiver drop a repeat. Safe in every process at
once."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from models.billing import as_utc, time_param
from models.errors import ValidationFailed
from models.events import WebhookEndpointDisabled
from models.outbox import write_events
from models.records import AlertKind
from models.sql import Sql, single_statement, transaction
from models.webhooks import DeliveryStatus, WebhookEndpoint, WebhookMessage, message_id

MAX_ERROR = 500


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off with jitter: `first_delay`, doubling up to `max_delay`, for
    `attempts` attempts in all (the defaults: 19 attempts over about three days)."""

    first_delay: float = 5.0
    max_delay: float = 43_200.0
    attempts: int = 19

    def delay_after(self, attempts_made: int) -> float | None:
        """Seconds before the next attempt, None when there is none."""
        if attempts_made >= self.attempts:
            return None
        step = min(self.first_delay * 2 ** min(attempts_made - 1, 60), self.max_delay)
        return step * random.uniform(0.8, 1.2)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message held for one attempt, with what sending it needs."""

    id: int
    endpoint_id: int
    application_id: int
    event_type: str
    payload: str
    attempts: int  # made before this one
    url: str
    signing_secrets: list[str]
    # The lease this claim stamped: an attempt settles the message only while it still holds
    # (a redelivery asked for meanwhile, or another holder after it ran out, keeps it pending)
    lease_until: datetime

    @property
    def message_id(self) -> str:
        return message_id(self.id)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt did: `status` the receiver's answer (None: no answer)."""

    message: Claimed
    delivered: bool
    status: int | None
    latency_ms: float
    error: str | None


def _in(ids: Sequence[int], start: int = 1) -> str:
    return ",".join(f"${i}" for i in range(start, start + len(ids)))


# Up to `$2` pending messages of up to `$3` endpoints whose head (oldest pending message)
# is due and free at `$1`, in id order per endpoint: on PostgreSQL an index probe per
# endpoint. On SQLite (one process, few endpoints) up to `$1` pending messages of every
# endpoint, from a window over them; `_runs` keeps those whose head is due and free.
_RUNS_POSTGRES = (
    "WITH heads AS (SELECT e.id AS endpoint_id, h.id AS head, h.next_attempt_at"
    " FROM webhook_endpoint e CROSS JOIN LATERAL (SELECT w.id, w.next_attempt_at,"
    " w.lease_until FROM webhook_message w WHERE w.endpoint_id = e.id"
    " AND w.status = 'PENDING' ORDER BY w.id LIMIT 1) h WHERE e.enabled"
    " AND h.next_attempt_at <= $1 AND (h.lease_until IS NULL OR h.lease_until < $1)"
    " ORDER BY h.next_attempt_at LIMIT $3)"
    " SELECT heads.endpoint_id, m.id, m.next_attempt_at, m.lease_until FROM heads"
    " CROSS JOIN LATERAL (SELECT w.id, w.next_attempt_at, w.lease_until FROM webhook_message w"
    " WHERE w.endpoint_id = heads.endpoint_id AND w.status = 'PENDING' AND w.id >= heads.head"
    " ORDER BY w.id LIMIT $2) m ORDER BY heads.next_attempt_at, heads.endpoint_id, m.id"
)
_RUNS_SQLITE = (
    "SELECT endpoint_id, id, next_attempt_at, lease_until FROM (SELECT w.endpoint_id, w.id,"
    " w.next_attempt_at, w.lease_until, row_number() OVER (PARTITION BY w.endpoint_id"
    " ORDER BY w.id) AS n FROM webhook_message w JOIN webhook_endpoint e"
    " ON e.id = w.endpoint_id WHERE e.enabled AND w.status = 'PENDING')"
    " WHERE n <= $1 ORDER BY endpoint_id, id"
)


def _runs(rows: Sequence[Any], now: datetime, endpoints: int) -> dict[int, list[int]]:
    """Per endpoint whose head is due and free, the ids from its head up to the first that
    is not free, in order, for at most `endpoints` endpoints."""
    runs: dict[int, list[int]] = {}
    closed: set[int] = set()
    for row in rows:
        endpoint_id = row["endpoint_id"]
        if endpoint_id in closed:
            continue
        lease = row["lease_until"]
        free = lease is None or as_utc(lease) < now
        if endpoint_id not in runs:
            due = as_utc(row["next_attempt_at"]) <= now
            if not (due and free) or len(runs) >= endpoints:
                closed.add(endpoint_id)
                continue
            runs[endpoint_id] = []
        elif not free:
            closed.add(endpoint_id)
            continue
        runs[endpoint_id].append(row["id"])
    return runs


async def claim_runs(endpoints: int, per_endpoint: int, lease: timedelta) -> list[list[Claimed]]:
    """Holds for `lease`, for up to `endpoints` endpoints whose head is due, up to
    `per_endpoint` of their pending messages from the head on, in id order: one run per
    endpoint, to be sent one after the other. A claimer that did not get an endpoint's
    head (another took it) lets go of the rest of that endpoint's run."""
    now = datetime.now(UTC)

    async def find(db: Sql) -> dict[int, list[int]]:
        if db.postgres:
            rows = await db.rows(_RUNS_POSTGRES, now, per_endpoint, endpoints)
        else:
            rows = await db.rows(_RUNS_SQLITE, per_endpoint)
        return _runs(rows, now, endpoints)

    wanted = await single_statement(find)
    ids = [i for run in wanted.values() for i in run]
    if not ids:
        return []

    until = now + lease

    async def claim(db: Sql) -> list[dict[str, Any]]:
        n = len(ids)
        return await db.rows(
            f"UPDATE webhook_message SET lease_until = ${n + 1} WHERE id IN (SELECT id FROM"
            f" webhook_message WHERE id IN ({_in(ids)}) AND status = 'PENDING' AND"
            f" (lease_until IS NULL OR lease_until < ${n + 2}) FOR UPDATE SKIP LOCKED)"
            " RETURNING id, endpoint_id, application_id, event_type, payload, attempts",
            *ids,
            time_param(db, until),
            time_param(db, now),
        )

    held = {row["id"]: row for row in await single_statement(claim)}
    targets = await _targets(sorted(wanted), now)
    runs, unwanted = [], []
    for endpoint_id, run_ids in wanted.items():
        target = targets.get(endpoint_id)
        prefix = []
        for row_id in run_ids:
            if row_id not in held or target is None:
                break
            prefix.append(row_id)
        unwanted += [i for i in run_ids[len(prefix) :] if i in held]
        if prefix and target is not None:
            url, signing = target
            runs.append([_claimed(held[i], url, signing, until) for i in prefix])
    if unwanted:
        await release(unwanted)
    return runs


def _claimed(
    row: dict[str, Any], url: str, signing_secrets: list[str], lease_until: datetime
) -> Claimed:
    return Claimed(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        application_id=row["application_id"],
        event_type=row["event_type"],
        payload=row["payload"],
        attempts=row["attempts"],
        url=url,
        signing_secrets=signing_secrets,
        lease_until=lease_until,
    )


async def _targets(endpoint_ids: list[int], now: datetime) -> dict[int, tuple[str, list[str]]]:
    """Each endpoint's URL and the secrets that sign now."""
    rows = await single_statement(
        lambda db: db.rows(
            "SELECT id, url, secret, previous_secret, previous_secret_until FROM"
            f" webhook_endpoint WHERE id IN ({_in(endpoint_ids)})",
            *endpoint_ids,
        )
    )
    found = {}
    for row in rows:
        signing = [row["secret"]]
        until = row["previous_secret_until"]
        if row["previous_secret"] and until is not None and as_utc(until) > now:
            signing.append(row["previous_secret"])
        found[row["id"]] = (row["url"], signing)
    return found


async def release(message_ids: Sequence[int]) -> None:
    """Lets go of held messages not attempted (they stay pending, in their place)."""
    if not message_ids:
        return
    await single_statement(lambda db: _release(db, message_ids))


async def _release(db: Sql, message_ids: Sequence[int]) -> None:
    await db.run(
        f"UPDATE webhook_message SET lease_until = NULL WHERE id IN ({_in(message_ids)})"
        " AND status = 'PENDING'",
        *message_ids,
    )


# The attempt's claim still holds the message: its lease is the one the claim stamped
_HELD_M = "m.lease_until = v.lease"


def _held(parameter: int) -> str:
    return f"lease_until = ${parameter}"


@dataclass(frozen=True, slots=True)
class DisabledEndpoint:
    id: int
    application_id: int
    url: str
    failing_since: datetime


async def record_attempts(
    attempts: Sequence[Attempt],
    policy: RetryPolicy,
    disable_after: timedelta,
    released: Sequence[int] = (),
) -> list[DisabledEndpoint]:
    """Stores what the attempts did (a message not PENDING any more, delivered meanwhile by
    another holder, is left as it is; one whose lease is not the attempt's any more, being
    redelivered or held by another, gets the attempt counted and stays pending), schedules
    retries, gives up on messages out of attempts, lets go of the `released` messages (held,
    not attempted), and disables the endpoints failing for longer than `disable_after`: those
    disabled now."""
    now = datetime.now(UTC)

    async def work(db: Sql) -> list[DisabledEndpoint]:
        at = time_param(db, now)
        if released:
            await _release(db, released)
        delivered = [a for a in attempts if a.delivered]
        failed = [a for a in attempts if not a.delivered]
        # An attempt settles its message (DELIVERED, FAILED or a retry's time) only while its
        # claim's lease holds; otherwise it is counted and the message stays as it is
        if delivered and db.postgres:
            await db.run(
                "UPDATE webhook_message m SET attempts = m.attempts + 1,"
                " response_status = v.status, latency_ms = v.latency, last_error = NULL,"
                f" status = CASE WHEN {_HELD_M} THEN 'DELIVERED' ELSE m.status END,"
                f" delivered_at = CASE WHEN {_HELD_M} THEN $4 ELSE m.delivered_at END,"
                f" lease_until = CASE WHEN {_HELD_M} THEN NULL ELSE m.lease_until END"
                " FROM unnest($1::bigint[], $2::int[], $3::float8[], $5::timestamptz[])"
                " AS v(id, status, latency, lease) WHERE m.id = v.id AND m.status = 'PENDING'",
                [a.message.id for a in delivered],
                [a.status for a in delivered],
                [a.latency_ms for a in delivered],
                now,
                [a.message.lease_until for a in delivered],
            )
        else:
            for a in delivered:
                await db.run(
                    "UPDATE webhook_message SET attempts = attempts + 1, response_status = $2,"
                    " latency_ms = $3, last_error = NULL,"
                    f" status = CASE WHEN {_held(5)} THEN 'DELIVERED' ELSE status END,"
                    f" delivered_at = CASE WHEN {_held(5)} THEN $4 ELSE delivered_at END,"
                    f" lease_until = CASE WHEN {_held(5)} THEN NULL ELSE lease_until END"
                    " WHERE id = $1 AND status = 'PENDING'",
                    a.message.id,
                    a.status,
                    a.latency_ms,
                    at,
                    time_param(db, a.message.lease_until),
                )
        for a in failed:
            delay = policy.delay_after(a.message.attempts + 1)
            status = DeliveryStatus.PENDING if delay is not None else DeliveryStatus.FAILED
            await db.run(
                "UPDATE webhook_message SET attempts = attempts + 1, response_status = $3,"
                " latency_ms = $4, last_error = $5,"
                f" status = CASE WHEN {_held(7)} THEN $2 ELSE status END,"
                f" next_attempt_at = CASE WHEN {_held(7)} THEN $6 ELSE next_attempt_at END,"
                f" lease_until = CASE WHEN {_held(7)} THEN NULL ELSE lease_until END"
                " WHERE id = $1 AND status = 'PENDING'",
                a.message.id,
                status.value,
                a.status,
                a.latency_ms,
                (a.error or "")[:MAX_ERROR] or None,
                time_param(db, now + timedelta(seconds=delay or 0)),
                time_param(db, a.message.lease_until),
            )
        answered = sorted({a.message.endpoint_id for a in delivered})
        if answered:
            await db.run(
                "UPDATE webhook_endpoint SET failing_since = NULL"
                f" WHERE id IN ({_in(answered)}) AND failing_since IS NOT NULL",
                *answered,
            )
        failing = sorted({a.message.endpoint_id for a in failed} - set(answered))
        if not failing:
            return []
        n = len(failing)
        reason = f"failing for more than {disable_after}"
        await db.run(
            f"UPDATE webhook_endpoint SET failing_since = ${n + 1}"
            f" WHERE id IN ({_in(failing)}) AND failing_since IS NULL",
            *failing,
            at,
        )
        rows = await db.rows(
            f"UPDATE webhook_endpoint SET enabled = FALSE, updated_at = ${n + 1},"
            f" disabled_reason = ${n + 3} WHERE id IN ({_in(failing)}) AND enabled"
            f" AND failing_since < ${n + 2} RETURNING id, application_id, url, failing_since",
            *failing,
            at,
            time_param(db, now - disable_after),
            reason,
        )
        disabled = [
            DisabledEndpoint(r["id"], r["application_id"], r["url"], as_utc(r["failing_since"]))
            for r in rows
        ]
        await _write_disabled_alerts(db, disabled, reason, now)
        return disabled

    return await transaction(work)


async def _write_disabled_alerts(
    db: Sql, disabled: Sequence[DisabledEndpoint], reason: str, now: datetime
) -> None:
    """A WEBHOOK_ENDPOINT_DISABLED alert per endpoint just disabled, and its outbox row (the
    `webhook_endpoint.disabled` webhook, to the application's other endpoints), in the
    transaction that disabled it."""
    for endpoint in disabled:
        alert_id = await db.value(
            "INSERT INTO alert (application_id, webhook_endpoint_id, kind, created_at)"
            " VALUES ($1, $2, $3, now()) RETURNING id",
            endpoint.application_id,
            endpoint.id,
            AlertKind.WEBHOOK_ENDPOINT_DISABLED.value,
        )
        event = WebhookEndpointDisabled(
            application_id=endpoint.application_id,
            alert_id=alert_id,
            endpoint_id=endpoint.id,
            url=endpoint.url,
            reason=reason,
            failing_since=endpoint.failing_since.isoformat(),
            at=now.isoformat(),
        )
        await write_events(db, endpoint.application_id, [event])


async def redeliver(message: WebhookMessage) -> WebhookMessage:
    """Sends the message again, with the same `webhook-id`, as a new attempt (after the
    endpoint's older pending messages, whose order it keeps)."""
    endpoint = await WebhookEndpoint.get(id=message.endpoint_id)  # type: ignore[attr-defined]
    if not endpoint.enabled:
        raise ValidationFailed("the endpoint is disabled: enable it first", field="id")
    now = datetime.now(UTC)
    await WebhookMessage.filter(id=message.id).update(
        status=DeliveryStatus.PENDING, next_attempt_at=now, lease_until=None
    )
    await message.refresh_from_db()
    return message


async def delivery_page(
    endpoint_id: int, first: int, before_id: int | None, status: DeliveryStatus | None
) -> tuple[list[WebhookMessage], bool, int]:
    """An endpoint's messages newest first (keyset on id): the page, whether more follow,
    and how many match in all."""
    query = WebhookMessage.filter(endpoint_id=endpoint_id)
    if status is not None:
        query = query.filter(status=status)
    total = await query.count()
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    rows = await query.order_by("-id").limit(first + 1)
    return rows[:first], len(rows) > first, total


async def delete_settled_before(cutoff: datetime, batch: int = 5_000) -> int:
    """Deletes delivered and failed messages created before `cutoff`, a bounded batch per
    statement; pending ones (a disabled endpoint's) are kept. Safe in every process at
    once: two deleters of the same rows simply find fewer. The number deleted."""
    deleted = 0
    while True:
        count = await single_statement(
            lambda db: db.run(
                "DELETE FROM webhook_message WHERE id IN (SELECT id FROM webhook_message"
                " WHERE created_at < $1 AND status <> 'PENDING' LIMIT $2)",
                time_param(db, cutoff),
                batch,
            )
        )
        deleted += count
        if count < batch:
            return deleted
