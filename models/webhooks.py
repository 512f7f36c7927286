"""Webhook endpoints and their messages (docs/webhooks.md).

An endpoint is an application's URL with the event types it wants and the secret its
messages are signed with. A message is one event for one endpoint: written durably in the
transaction that settles the event (the relay's, for the outbox's events), delivered at
least once by the deliverer of any process, in id order per endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.errors import NotFound, ValidationFailed
from models.sql import Sql, transaction
from models.tenancy import Application
from models.webhook_signing import check_target, new_secret

MAX_DESCRIPTION = 500
MAX_ENDPOINTS_PER_APPLICATION = 50


class WebhookEventType(StrEnum):
    BALANCE_LOW = "balance.low"
    BALANCE_EXHAUSTED = "balance.exhausted"
    BALANCE_RECOVERED = "balance.recovered"
    CREDITS_EXPIRING = "credits.expiring"
    CREDITS_EXPIRED = "credits.expired"
    PACK_PURCHASED = "pack.purchased"
    ALLOCATION_CHANGED = "allocation.changed"
    BILLING_PERIOD_CLOSED = "billing_period.closed"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"
    TEST = "test"  # sent on demand (sendTestWebhook), whatever the endpoint listens to


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"  # waiting for its (next) attempt
    DELIVERED = "DELIVERED"  # the receiver answered 2xx
    FAILED = "FAILED"  # every attempt failed (or its endpoint was deleted meanwhile)


class WebhookEndpoint(Model):
    """`events` holds the event types, comma-separated. While `previous_secret_until` is
    ahead, the previous secret signs too (a rotation's overlap). `failing_since`: the first
    failed attempt since the last delivered one (null while deliveries succeed)."""

    id = fields.BigIntField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="webhook_endpoints", on_delete=fields.RESTRICT
    )
    url = fields.CharField(max_length=2048)
    description = fields.CharField(max_length=MAX_DESCRIPTION, default="")
    events = fields.CharField(max_length=500)
    enabled = fields.BooleanField(default=True)
    disabled_reason = fields.CharField(max_length=500, null=True)
    secret = fields.CharField(max_length=100)
    previous_secret = fields.CharField(max_length=100, null=True)
    previous_secret_until = fields.DatetimeField(null=True)
    failing_since = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "webhook_endpoint"
        indexes = (("application_id", "enabled"),)

    @property
    def event_types(self) -> list[WebhookEventType]:
        return [WebhookEventType(name) for name in self.events.split(",") if name]

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a message sent at `now`: the current one, and the previous
        one during a rotation's overlap."""
        until = self.previous_secret_until
        if self.previous_secret and until is not None and until > now:
            return [self.secret, self.previous_secret]
        return [self.secret]


class WebhookMessage(Model):
    """One event for one endpoint, and where its delivery stands. `id` orders an endpoint's
    messages (`webhook-id` is `msg_<id>`); `lease_until` is set while a deliverer holds it."""

    id = fields.BigIntField(primary_key=True)
    endpoint: fields.ForeignKeyRelation[WebhookEndpoint] = fields.ForeignKeyField(
        "models.WebhookEndpoint", related_name="messages", on_delete=fields.CASCADE
    )
    application_id = fields.BigIntField()
    event_type = fields.CharField(max_length=40)
    payload = fields.TextField()
    status = fields.CharEnumField(DeliveryStatus, max_length=16)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    lease_until = fields.DatetimeField(null=True)
    response_status = fields.IntField(null=True)
    latency_ms = fields.FloatField(null=True)
    last_error = fields.CharField(max_length=500, null=True)
    created_at = fields.DatetimeField()
    delivered_at = fields.DatetimeField(null=True)

    class Meta:
        table = "webhook_message"
        # The head of an endpoint's queue (its oldest pending message) and its delivery log,
        # newest first, whole or by status.
        indexes = (("endpoint_id", "status", "id"), ("endpoint_id", "id"))

    @property
    def message_id(self) -> str:
        return message_id(self.id)


def message_id(row_id: int) -> str:
    return f"msg_{row_id}"


def _events(events: Sequence[str]) -> str:
    chosen = []
    for name in events:
        try:
            chosen.append(WebhookEventType(name))
        except ValueError:
            raise ValidationFailed(f"unknown event type {name!r}", field="events") from None
    if not chosen:
        raise ValidationFailed("give at least one event type", field="events")
    return ",".join(dict.fromkeys(chosen))


def _description(description: str | None) -> str:
    text = (description or "").strip()
    if len(text) > MAX_DESCRIPTION:
        raise ValidationFailed(
            f"description must be at most {MAX_DESCRIPTION} characters", field="description"
        )
    return text


async def create_endpoint(
    application_id: int,
    url: str,
    events: Sequence[str],
    description: str | None = None,
    *,
    allow_private: bool = False,
) -> WebhookEndpoint:
    """A new enabled endpoint with a fresh secret. Its URL must be http(s) to public
    addresses unless `allow_private`; an application has at most
    MAX_ENDPOINTS_PER_APPLICATION."""
    chosen = _events(events)
    text = _description(description)
    await check_target(url, allow_private)
    count = await WebhookEndpoint.filter(application_id=application_id).count()
    if count >= MAX_ENDPOINTS_PER_APPLICATION:
        raise ValidationFailed(
            f"an application has at most {MAX_ENDPOINTS_PER_APPLICATION} webhook endpoints"
        )
    now = datetime.now(UTC)
    return await WebhookEndpoint.create(
        application_id=application_id,
        url=url,
        events=chosen,
        description=text,
        secret=new_secret(),
        created_at=now,
        updated_at=now,
    )


async def endpoint_of(application_id: int, endpoint_id: int | None) -> WebhookEndpoint:
    """The application's endpoint, else NotFound (another application's too)."""
    found = None
    if endpoint_id is not None:
        found = await WebhookEndpoint.get_or_none(id=endpoint_id, application_id=application_id)
    if found is None:
        raise NotFound("webhook endpoint not found", field="id")
    return found


async def update_endpoint(
    endpoint: WebhookEndpoint,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
    allow_private: bool = False,
) -> WebhookEndpoint:
    """Changes what is given. Enabling an endpoint clears its failure record: its pending
    messages are tried again from the oldest."""
    if url is not None:
        await check_target(url, allow_private)
        endpoint.url = url
    if events is not None:
        endpoint.events = _events(events)
    if description is not None:
        endpoint.description = _description(description)
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        endpoint.disabled_reason = None if enabled else "disabled by the application"
        endpoint.failing_since = None
    endpoint.updated_at = datetime.now(UTC)
    await endpoint.save()
    return endpoint


async def rotate_secret(endpoint: WebhookEndpoint, overlap: timedelta) -> WebhookEndpoint:
    """A new secret; the current one keeps signing beside it for `overlap`."""
    if overlap < timedelta(0) or overlap > timedelta(days=7):
        raise ValidationFailed("overlap must be between 0 and 7 days", field="overlapSeconds")
    now = datetime.now(UTC)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = now + overlap
    endpoint.secret = new_secret()
    endpoint.updated_at = now
    await endpoint.save()
    return endpoint


async def delete_endpoint(endpoint: WebhookEndpoint) -> None:
    """Deletes the endpoint and its messages (delivered or not)."""

    async def work(db: Sql) -> None:
        await db.run("DELETE FROM webhook_message WHERE endpoint_id = $1", endpoint.id)
        await db.run("DELETE FROM webhook_endpoint WHERE id = $1", endpoint.id)

    await transaction(work)


async def list_endpoints(application_id: int, first: int) -> list[WebhookEndpoint]:
    return await WebhookEndpoint.filter(application_id=application_id).order_by("id").limit(first)
