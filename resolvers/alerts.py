"""Low-credit alerts: thresholds, the alert list, acknowledgement and the live stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import strawberry

from models.access import require_api_key, visible_application, writable_application
from models.alerts import acknowledge_alert, set_low_balance_threshold
from models.credits import CreditPool as PoolRow
from models.credits import EndUser as EndUserRow
from models.errors import NotFound
from models.events import AlertRaised
from models.records import Alert as AlertRow
from models.records import AlertKind as DomainAlertKind
from models.references import parse_id
from models.webhooks import WebhookEndpoint as EndpointRow
from resolvers.context import Info, principal_of
from resolvers.cursors import cursor_value, encode_cursor, whole_number
from resolvers.end_users import EndUser, EndUserRef, PageInfo
from resolvers.errors import UserError, errors_as_query_errors, errors_in_payload
from resolvers.pools import CreditPool, check_page_size
from resolvers.webhooks import WebhookEndpoint
from subscriptions.fanout import Topic
from subscriptions.live import LiveEvents

AlertKind = strawberry.enum(DomainAlertKind, name="AlertKind")


@strawberry.type(
    description="A balance's status change (LOW, EXHAUSTED, RECOVERED: `pool` and `remaining`"
    " set), or a webhook endpoint disabled for failing (WEBHOOK_ENDPOINT_DISABLED:"
    " `webhookEndpoint` set, `pool` and `remaining` null)."
)
class CreditAlert:
    id: strawberry.ID
    application_id: strawberry.ID
    pool: str | None
    kind: AlertKind
    remaining: int | None
    threshold: int | None
    at: datetime
    acknowledged: bool
    end_user_row_id: strawberry.Private[int | None]
    endpoint_row_id: strawberry.Private[int | None] = None

    @strawberry.field
    async def end_user(self) -> EndUser | None:
        if self.end_user_row_id is None:
            return None
        row = await EndUserRow.get_or_none(id=self.end_user_row_id)
        return None if row is None else EndUser.from_row(row)

    @strawberry.field(description="The endpoint disabled; null once deleted.")
    async def webhook_endpoint(self) -> WebhookEndpoint | None:
        if self.endpoint_row_id is None:
            return None
        row = await EndpointRow.get_or_none(id=self.endpoint_row_id)
        return None if row is None else WebhookEndpoint.from_row(row)

    @classmethod
    def from_row(cls, row: AlertRow, pool_key: str | None) -> CreditAlert:
        return cls(
            id=strawberry.ID(str(row.id)),
            application_id=strawberry.ID(str(row.application_id)),  # type: ignore[attr-defined]
            pool=pool_key,
            kind=row.kind,
            remaining=row.remaining,
            threshold=row.threshold,
            at=row.created_at,
            acknowledged=row.acknowledged_at is not None,
            end_user_row_id=row.end_user_id,
            endpoint_row_id=row.webhook_endpoint_id,
        )

    @classmethod
    def from_event(cls, event: AlertRaised) -> CreditAlert:
        return cls(
            id=strawberry.ID(str(event.id)),
            application_id=strawberry.ID(str(event.application_id)),
            pool=event.pool,
            kind=event.kind,
            remaining=event.remaining,
            threshold=event.threshold,
            at=datetime.fromisoformat(event.at),
            acknowledged=False,
            end_user_row_id=event.end_user_id,
        )


@strawberry.type
class CreditAlertEdge:
    cursor: str
    node: CreditAlert


@strawberry.type
class CreditAlertConnection:
    edges: list[CreditAlertEdge]
    page_info: PageInfo
    total_count: int


def _cursor(alert_id: int) -> str:
    return encode_cursor("Alert", str(alert_id))


async def alert_page(application_id: int, first: int, after: str | None) -> CreditAlertConnection:
    """Newest first."""
    with errors_as_query_errors():
        check_page_size(first)
    query = AlertRow.filter(application_id=application_id)
    total = await query.count()
    if after is not None:
        with errors_as_query_errors():
            query = query.filter(id__lt=cursor_value(after, "Alert", whole_number))
    rows = await query.order_by("-id").limit(first + 1)
    keys = dict(await PoolRow.filter(application_id=application_id).values_list("id", "key"))
    page = [
        CreditAlertEdge(cursor=_cursor(r.id), node=CreditAlert.from_row(r, keys.get(r.pool_id)))
        for r in rows[:first]
    ]
    return CreditAlertConnection(
        edges=page,
        page_info=PageInfo(
            has_next_page=len(rows) > first, end_cursor=page[-1].cursor if page else None
        ),
        total_count=total,
    )


@strawberry.input
class SetLowBalanceThresholdInput:
    application_id: strawberry.ID
    pool: str
    threshold: int | None = strawberry.field(description="null clears the threshold")
    end_user: EndUserRef | None = strawberry.field(
        default=None, description="Set this End User's own threshold."
    )
    end_user_default: bool = strawberry.field(
        default=False, description="Set the pool's default threshold for its End Users."
    )


@strawberry.type
class SetLowBalanceThresholdPayload:
    pool: CreditPool | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(SetLowBalanceThresholdPayload)
async def resolve_set_threshold(
    info: Info, input: SetLowBalanceThresholdInput
) -> SetLowBalanceThresholdPayload:
    """Without endUser or endUserDefault: the pool's own threshold."""
    application_id = await writable_application(principal_of(info), input.application_id)
    await set_low_balance_threshold(
        application_id,
        input.pool,
        input.threshold,
        end_user=None if input.end_user is None else input.end_user.to_domain(),
        end_user_default=input.end_user_default,
    )
    pool = await PoolRow.get(application_id=application_id, key=input.pool)
    return SetLowBalanceThresholdPayload(pool=CreditPool.from_row(pool))


@strawberry.type
class AcknowledgeAlertPayload:
    alert: CreditAlert | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(AcknowledgeAlertPayload)
async def resolve_acknowledge(info: Info, id: strawberry.ID) -> AcknowledgeAlertPayload:
    principal = principal_of(info)
    parsed = parse_id(id)
    row = None if parsed is None else await AlertRow.get_or_none(id=parsed)
    if row is None:
        raise NotFound("alert not found", field="id")
    application_id = await writable_application(principal, row.application_id)  # type: ignore[attr-defined]
    row = await acknowledge_alert(application_id, row.id)
    pool = None if row.pool_id is None else await PoolRow.get(id=row.pool_id)
    return AcknowledgeAlertPayload(alert=CreditAlert.from_row(row, pool and pool.key))


def low_credit_alerts(info: Info, application_id: strawberry.ID) -> AsyncIterator[CreditAlert]:
    """Every LOW, EXHAUSTED and RECOVERED alert of the application from now on (a webhook
    endpoint's alert is not carried: `Application.alerts` and the webhook list it)."""

    async def authorise() -> Topic:
        with errors_as_query_errors():
            principal = principal_of(info)
            require_api_key(principal)
            return Topic(await visible_application(principal, application_id), "alert")

    return LiveEvents(info.context.realtime, authorise, CreditAlert.from_event)
