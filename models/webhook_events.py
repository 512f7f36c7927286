"""Which events become webhook messages, their bodies, and the transactions that write them
(docs/webhooks.md#events).

The outbox's events (balances, alerts) become messages in the relay's transaction that
deletes their published rows (`settle_published`): a committed event yields exactly one
message per subscribed endpoint, even when a relay dies between publishing and deleting (its
successor deletes the rows, and writes their messages, once), and a rolled-back one none.
The ledger's write path does not change: a consumption moves no webhook, and an
application without endpoints costs the relay no query. Other events (a billing period
closed, a test) are written in their own transaction by `enqueue_event`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from models.errors import ValidationFailed
from models.events import BalanceCause, CreditsExpiring, WebhookEndpointDisabled
from models.outbox import delete_published
from models.sql import Sql, single_statement, transaction, values_list
from models.webhooks import WebhookEndpoint, WebhookEventType

PAYLOAD_VERSION = 1
_ALERT_TYPES = {
    "LOW": WebhookEventType.BALANCE_LOW,
    "EXHAUSTED": WebhookEventType.BALANCE_EXHAUSTED,
    "RECOVERED": WebhookEventType.BALANCE_RECOVERED,
}
_CAUSE_TYPES = {
    BalanceCause.PURCHASE.value: WebhookEventType.PACK_PURCHASED,
    BalanceCause.ALLOCATE.value: WebhookEventType.ALLOCATION_CHANGED,
    BalanceCause.RELEASE.value: WebhookEventType.ALLOCATION_CHANGED,
    BalanceCause.EXPIRE.value: WebhookEventType.CREDITS_EXPIRED,
}
_TOPICS = ("alert", "balance", WebhookEndpointDisabled.topic, CreditsExpiring.topic)
_BALANCE_FIGURES = ("version", "cause", "allocated", "used", "remaining", "expired", "status")
_ALERT_FIGURES = ("kind", "remaining", "threshold")
_MESSAGES_PER_STATEMENT = 1_000

# Called after messages were written (the deliverer's wake-up in this process).
message_hooks: list[Callable[[], None]] = []


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """An event as endpoints receive it; `end_user_id`'s external id is looked up when its
    messages are written."""

    application_id: int
    type: WebhookEventType
    at: str
    data: dict[str, Any]
    end_user_id: int | None = None


def outbox_webhook_event(row: Mapping[str, Any]) -> WebhookEvent | None:
    """The webhook event an outbox row announces, if any: alerts (an endpoint disabled for
    failing too), balance changes by a purchase (the pool's), an allocation or release
    (the End User's) and an expiry (both), and credits expiring soon. A consumption
    announces none (its status changes come as alerts)."""
    topic = row["topic"]
    if topic not in _TOPICS:
        return None
    payload = row["payload"]
    event = orjson.loads(payload) if isinstance(payload, str | bytes) else payload
    if topic == WebhookEndpointDisabled.topic:
        return _endpoint_disabled(event)
    if topic == CreditsExpiring.topic:
        return _credits_expiring(event)
    end_user_id = event["end_user_id"]
    if topic == "alert":
        kind = _ALERT_TYPES[event["kind"]]
        figures = {"alertId": str(event["id"])} | {k: event[k] for k in _ALERT_FIGURES}
    else:
        kind = _CAUSE_TYPES.get(event["cause"])
        if kind is None or (end_user_id is None and kind == WebhookEventType.ALLOCATION_CHANGED):
            return None
        if end_user_id is not None and kind == WebhookEventType.PACK_PURCHASED:
            return None
        figures = {k: event[k] for k in _BALANCE_FIGURES}
    data = {
        "applicationId": str(event["application_id"]),
        "pool": event["pool"],
        "endUser": None,
        **figures,
    }
    return WebhookEvent(event["application_id"], kind, event["at"], data, end_user_id)


def _endpoint_disabled(event: dict[str, Any]) -> WebhookEvent:
    data = {
        "applicationId": str(event["application_id"]),
        "alertId": str(event["alert_id"]),
        "endpointId": str(event["endpoint_id"]),
        "url": event["url"],
        "disabledReason": event["reason"],
        "failingSince": event["failing_since"],
    }
    kind = WebhookEventType.WEBHOOK_ENDPOINT_DISABLED
    return WebhookEvent(event["application_id"], kind, event["at"], data)


def _credits_expiring(event: dict[str, Any]) -> WebhookEvent:
    data = {
        "applicationId": str(event["application_id"]),
        "pool": event["pool"],
        "endUser": None,
        "packId": str(event["pack_id"]),
        "remaining": event["remaining"],
        "expiresAt": event["expires_at"],
    }
    if event["end_user_id"] is None:
        data["unallocated"] = event["unallocated"]
    kind = WebhookEventType.CREDITS_EXPIRING
    return WebhookEvent(event["application_id"], kind, event["at"], data, event["end_user_id"])


def message_body(event: WebhookEvent, external_ids: Mapping[int, str]) -> str:
    """The JSON body every endpoint receives for the event: `version`, `type`, `timestamp`
    (when it happened) and `data`, with the figures a query shows."""
    data = event.data
    if event.end_user_id is not None:
        external = external_ids.get(event.end_user_id)
        data = data | {"endUser": {"id": str(event.end_user_id), "externalId": external}}
    body = {"version": PAYLOAD_VERSION, "type": event.type.value, "timestamp": event.at}
    return orjson.dumps(body | {"data": data}).decode()


async def _listening(db: Sql, application_ids: set[int]) -> dict[int, list[tuple[int, set[str]]]]:
    """The enabled endpoints of these applications, with the event types each wants."""
    ids = sorted(application_ids)
    placeholders = ",".join(f"${i}" for i in range(1, len(ids) + 1))
    rows = await db.rows(
        "SELECT id, application_id, events FROM webhook_endpoint"
        f" WHERE enabled AND application_id IN ({placeholders}) ORDER BY id",
        *ids,
    )
    found: dict[int, list[tuple[int, set[str]]]] = {}
    for row in rows:
        found.setdefault(row["application_id"], []).append(
            (row["id"], set(row["events"].split(",")))
        )
    return found


async def _external_ids(db: Sql, events: Sequence[WebhookEvent]) -> dict[int, str]:
    ids = sorted({e.end_user_id for e in events if e.end_user_id is not None})
    if not ids:
        return {}
    placeholders = ",".join(f"${i}" for i in range(1, len(ids) + 1))
    rows = await db.rows(f"SELECT id, external_id FROM end_user WHERE id IN ({placeholders})", *ids)
    return {row["id"]: row["external_id"] for row in rows}


async def write_messages(
    db: Sql,
    events: Sequence[WebhookEvent],
    endpoints: Mapping[int, list[tuple[int, set[str]]]],
    only_endpoint: int | None = None,
) -> int:
    """One message per event and endpoint that wants its type (or, with `only_endpoint`,
    for that endpoint alone), in the caller's transaction, in the events' order; the
    number written."""
    external_ids = await _external_ids(db, events)
    args: list[Any] = []
    for event in events:
        body = None
        for endpoint_id, wanted in endpoints.get(event.application_id, ()):
            if only_endpoint is None and event.type.value not in wanted:
                continue
            if only_endpoint is not None and endpoint_id != only_endpoint:
                continue
            body = body or message_body(event, external_ids)
            args += [endpoint_id, event.application_id, event.type.value, body]
    step = _MESSAGES_PER_STATEMENT * 4
    for first in range(0, len(args), step):
        chunk = args[first : first + step]
        await db.run(
            "INSERT INTO webhook_message (endpoint_id, application_id, event_type, payload,"
            " status, attempts, next_attempt_at, created_at) VALUES "
            + values_list(len(chunk) // 4, 4, ", 'PENDING', 0, now(), now()"),
            *chunk,
        )
    return len(args) // 4


async def settle_published(rows: Sequence[Mapping[str, Any]]) -> int:
    """Deletes published outbox rows and writes, in the same transaction, the webhook
    messages of those this call deleted; the number of messages written. Without any
    endpoint to notify it is the plain DELETE it was before."""
    ids = [row["id"] for row in rows]
    announced = [(row["id"], e) for row in rows if (e := outbox_webhook_event(row)) is not None]
    endpoints: dict[int, list[tuple[int, set[str]]]] = {}
    if announced:
        applications = {event.application_id for _, event in announced}
        endpoints = await single_statement(lambda db: _listening(db, applications))
    if not endpoints:
        await single_statement(lambda db: delete_published(db, ids))
        return 0

    async def work(db: Sql) -> int:
        deleted = set(await delete_published(db, ids, returning=True))
        events = [event for row_id, event in announced if row_id in deleted]
        return await write_messages(db, events, endpoints)

    return await transaction(work)


async def enqueue_event(db: Sql, event: WebhookEvent, only_endpoint: int | None = None) -> int:
    """Writes an event's messages in the caller's transaction (a billing period's closing;
    a test message for one endpoint, whatever types it wants); the number written."""
    endpoints = await _listening(db, {event.application_id})
    return await write_messages(db, [event], endpoints, only_endpoint)


async def enqueue_test(endpoint: WebhookEndpoint) -> int:
    """A `test` message for one enabled endpoint, whatever types it wants; its id."""
    if not endpoint.enabled:
        raise ValidationFailed("the endpoint is disabled: enable it first", field="id")
    at = datetime.now(UTC).isoformat()
    data = {"applicationId": str(endpoint.application_id), "endpointId": str(endpoint.id)}
    event = WebhookEvent(endpoint.application_id, WebhookEventType.TEST, at, data)
    statement = (
        "INSERT INTO webhook_message (endpoint_id, application_id, event_type, payload, status,"
        " attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 'PENDING', 0, now(),"
        " now()) RETURNING id"
    )
    body = message_body(event, {})
    args = (endpoint.id, endpoint.application_id, event.type.value, body)
    row_id = await transaction(lambda db: db.value(statement, *args))
    for hook in message_hooks:
        hook()
    return row_id
