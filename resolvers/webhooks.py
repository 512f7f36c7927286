"""Webhooks: an application's endpoints, their delivery log, and the mutations that manage
them (docs/webhooks.md). Secrets are shown once, at creation and rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import strawberry

from models.access import (
    require_api_key,
    require_write,
    visible_application,
    writable_application,
)
from models.errors import NotFound
from models.references import parse_id
from models.webhook_events import enqueue_test
from models.webhook_queue import delivery_page, redeliver
from models.webhooks import DeliveryStatus as DomainDeliveryStatus
from models.webhooks import WebhookEndpoint as EndpointRow
from models.webhooks import WebhookEventType as DomainEventType
from models.webhooks import WebhookMessage as MessageRow
from models.webhooks import (
    create_endpoint,
    delete_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
)
from resolvers.context import Info, principal_of
from resolvers.cursors import cursor_value, encode_cursor, whole_number
from resolvers.end_users import PageInfo
from resolvers.errors import UserError, errors_as_query_errors, errors_in_payload
from resolvers.pools import check_page_size

WebhookEventType = strawberry.enum(
    DomainEventType,
    name="WebhookEventType",
    description="What a webhook announces; its `type` on the wire is the value in lower case"
    " with a dot (`balance.low`, `pack.purchased`, `billing_period.closed`).",
)
WebhookDeliveryStatus = strawberry.enum(DomainDeliveryStatus, name="WebhookDeliveryStatus")
CURSOR_KIND = "WebhookDelivery"
DEFAULT_OVERLAP_SECONDS = 86_400


@strawberry.type(description="One message to one endpoint, and where its delivery stands.")
class WebhookDelivery:
    id: strawberry.ID
    message_id: str = strawberry.field(
        description="The `webhook-id` header: the same for every attempt (deduplicate by it)."
    )
    event_type: WebhookEventType
    status: WebhookDeliveryStatus
    attempts: int
    response_status: int | None = strawberry.field(
        description="The last attempt's HTTP status; null when it got no answer."
    )
    latency_ms: float | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None = strawberry.field(
        description="When it is tried next; null once delivered or failed."
    )
    delivered_at: datetime | None
    payload: str = strawberry.field(description="The JSON body as sent.")

    @classmethod
    def from_row(cls, row: MessageRow) -> WebhookDelivery:
        pending = row.status == DomainDeliveryStatus.PENDING
        return cls(
            id=strawberry.ID(str(row.id)),
            message_id=row.message_id,
            event_type=DomainEventType(row.event_type),
            status=row.status,
            attempts=row.attempts,
            response_status=row.response_status,
            latency_ms=row.latency_ms,
            last_error=row.last_error,
            created_at=row.created_at,
            next_attempt_at=row.next_attempt_at if pending else None,
            delivered_at=row.delivered_at,
            payload=row.payload,
        )


@strawberry.type
class WebhookDeliveryEdge:
    cursor: str
    node: WebhookDelivery


@strawberry.type
class WebhookDeliveryConnection:
    edges: list[WebhookDeliveryEdge]
    page_info: PageInfo
    total_count: int


@strawberry.input
class WebhookDeliveryFilter:
    status: WebhookDeliveryStatus | None = None


@strawberry.type
class WebhookEndpoint:
    id: strawberry.ID
    application_id: strawberry.ID
    url: str
    description: str
    events: list[WebhookEventType]
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None = strawberry.field(
        description="The first failed attempt since the last delivered one."
    )
    previous_secret_expires_at: datetime | None = strawberry.field(
        description="Until then the secret before the last rotation signs too."
    )
    created_at: datetime
    updated_at: datetime
    row_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: EndpointRow) -> WebhookEndpoint:
        until = row.previous_secret_until
        return cls(
            id=strawberry.ID(str(row.id)),
            application_id=strawberry.ID(str(row.application_id)),  # type: ignore[attr-defined]
            url=row.url,
            description=row.description,
            events=row.event_types,
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            failing_since=row.failing_since,
            previous_secret_expires_at=until if until and until > datetime.now(UTC) else None,
            created_at=row.created_at,
            updated_at=row.updated_at,
            row_id=row.id,
        )

    @strawberry.field(description="The delivery log, newest first (keyset pages).")
    async def deliveries(
        self, first: int = 20, after: str | None = None, filter: WebhookDeliveryFilter | None = None
    ) -> WebhookDeliveryConnection:
        with errors_as_query_errors():
            check_page_size(first)
            before = None if after is None else cursor_value(after, CURSOR_KIND, whole_number)
        status = None if filter is None or filter.status is None else filter.status
        rows, more, total = await delivery_page(self.row_id, first, before, status)
        edges = [
            WebhookDeliveryEdge(
                cursor=encode_cursor(CURSOR_KIND, str(row.id)), node=WebhookDelivery.from_row(row)
            )
            for row in rows
        ]
        return WebhookDeliveryConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=more, end_cursor=edges[-1].cursor if edges else None),
            total_count=total,
        )


async def webhook_endpoints_of(
    info: Info, application_id: int, first: int
) -> list[WebhookEndpoint]:
    with errors_as_query_errors():
        require_api_key(principal_of(info))
        check_page_size(first)
    return [WebhookEndpoint.from_row(row) for row in await list_endpoints(application_id, first)]


async def _endpoint(info: Info, endpoint_id: strawberry.ID) -> EndpointRow:
    """The caller's endpoint for a change: NOT_FOUND for another application's (or an End
    User token), FORBIDDEN for a READ key."""
    principal = principal_of(info)
    require_api_key(principal)
    parsed = parse_id(endpoint_id)
    row = None if parsed is None else await EndpointRow.get_or_none(id=parsed)
    if row is None:
        raise NotFound("webhook endpoint not found", field="id")
    try:
        await visible_application(principal, row.application_id)  # type: ignore[attr-defined]
    except NotFound:
        raise NotFound("webhook endpoint not found", field="id") from None
    require_write(principal)
    return row


@strawberry.input
class CreateWebhookEndpointInput:
    application_id: strawberry.ID
    url: str = strawberry.field(description="http(s), to a public address.")
    events: list[WebhookEventType]
    description: str | None = None


@strawberry.type
class CreateWebhookEndpointPayload:
    endpoint: WebhookEndpoint | None = None
    secret: str | None = strawberry.field(
        default=None, description="The signing secret (`whsec_...`), shown once."
    )
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(CreateWebhookEndpointPayload)
async def resolve_create_endpoint(
    info: Info, input: CreateWebhookEndpointInput
) -> CreateWebhookEndpointPayload:
    principal = principal_of(info)
    require_api_key(principal)
    application_id = await writable_application(principal, input.application_id)
    row = await create_endpoint(
        application_id,
        input.url,
        [DomainEventType(e) for e in input.events],
        input.description,
        allow_private=info.context.webhooks_allow_private,
    )
    return CreateWebhookEndpointPayload(endpoint=WebhookEndpoint.from_row(row), secret=row.secret)


@strawberry.input
class UpdateWebhookEndpointInput:
    id: strawberry.ID
    url: str | None = None
    events: list[WebhookEventType] | None = None
    description: str | None = None
    enabled: bool | None = strawberry.field(
        default=None, description="true resumes a disabled endpoint from its oldest message."
    )


@strawberry.type
class WebhookEndpointPayload:
    endpoint: WebhookEndpoint | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(WebhookEndpointPayload)
async def resolve_update_endpoint(
    info: Info, input: UpdateWebhookEndpointInput
) -> WebhookEndpointPayload:
    row = await update_endpoint(
        await _endpoint(info, input.id),
        url=input.url,
        events=None if input.events is None else [DomainEventType(e) for e in input.events],
        description=input.description,
        enabled=input.enabled,
        allow_private=info.context.webhooks_allow_private,
    )
    return WebhookEndpointPayload(endpoint=WebhookEndpoint.from_row(row))


@errors_in_payload(WebhookEndpointPayload)
async def resolve_disable_endpoint(info: Info, id: strawberry.ID) -> WebhookEndpointPayload:
    row = await update_endpoint(await _endpoint(info, id), enabled=False)
    return WebhookEndpointPayload(endpoint=WebhookEndpoint.from_row(row))


@strawberry.type
class DeleteWebhookEndpointPayload:
    deleted_id: strawberry.ID | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(DeleteWebhookEndpointPayload)
async def resolve_delete_endpoint(info: Info, id: strawberry.ID) -> DeleteWebhookEndpointPayload:
    row = await _endpoint(info, id)
    await delete_endpoint(row)
    return DeleteWebhookEndpointPayload(deleted_id=strawberry.ID(str(row.id)))


@strawberry.type
class RotateWebhookSecretPayload:
    endpoint: WebhookEndpoint | None = None
    secret: str | None = strawberry.field(default=None, description="The new secret, shown once.")
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(RotateWebhookSecretPayload)
async def resolve_rotate_secret(
    info: Info,
    id: strawberry.ID,
    overlap_seconds: Annotated[
        int,
        strawberry.argument(
            description="How long the current secret keeps signing beside the new one (0 to"
            " 604800; a day by default)."
        ),
    ] = DEFAULT_OVERLAP_SECONDS,
) -> RotateWebhookSecretPayload:
    row = await rotate_secret(await _endpoint(info, id), timedelta(seconds=overlap_seconds))
    return RotateWebhookSecretPayload(endpoint=WebhookEndpoint.from_row(row), secret=row.secret)


@strawberry.type
class WebhookDeliveryPayload:
    delivery: WebhookDelivery | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(WebhookDeliveryPayload)
async def resolve_send_test(info: Info, id: strawberry.ID) -> WebhookDeliveryPayload:
    """A `test` event to the endpoint, after its pending messages."""
    message_id = await enqueue_test(await _endpoint(info, id))
    return WebhookDeliveryPayload(
        delivery=WebhookDelivery.from_row(await MessageRow.get(id=message_id))
    )


@errors_in_payload(WebhookDeliveryPayload)
async def resolve_redeliver(info: Info, id: strawberry.ID) -> WebhookDeliveryPayload:
    parsed = parse_id(id)
    row = None if parsed is None else await MessageRow.get_or_none(id=parsed)
    if row is None:
        raise NotFound("webhook delivery not found", field="id")
    try:
        await _endpoint(info, strawberry.ID(str(row.endpoint_id)))  # type: ignore[attr-defined]
    except NotFound:
        raise NotFound("webhook delivery not found", field="id") from None
    return WebhookDeliveryPayload(delivery=WebhookDelivery.from_row(await redeliver(row)))
