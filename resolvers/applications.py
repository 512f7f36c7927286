"""Applications: the root of everything an integrator reads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, cast

import strawberry

from models.access import (
    require_api_key,
    require_end_user,
    require_write,
    visible_application,
    writable_application,
)
from models.accounts import ApplicationLine, create_application
from models.credits import CreditPool as PoolRow
from models.credits import EndUser as EndUserRow
from models.end_users import EndUserInput as DomainEndUserInput
from models.end_users import upsert_end_users
from models.errors import NotFound, ValidationFailed
from models.pools import application_and_pools, create_pool
from models.references import parse_id
from models.tenancy import Application as ApplicationRow
from resolvers.alerts import CreditAlertConnection, alert_page
from resolvers.allocation_summary import AllocationSummary, allocation_summary_of
from resolvers.api_keys import KEYS_DESCRIPTION, ApiKey, resolve_api_keys
from resolvers.billing import (
    BillingPeriod,
    ExportFormat,
    ExportFrom,
    ExportType,
    billing_period_of,
    billing_periods_of,
    export_url_of,
)
from resolvers.consumption import (
    SERIES_DESCRIPTION,
    ConsumptionSeries,
    Granularity,
    load_series,
)
from resolvers.context import Info, principal_of
from resolvers.end_users import (
    EndUser,
    EndUserConnection,
    EndUserFilter,
    EndUserOrder,
    UpsertEndUsersInput,
    UpsertEndUsersPayload,
    end_user_page,
    pool_id_of,
)
from resolvers.errors import UserError, errors_as_query_errors, errors_in_payload, query_error
from resolvers.loaders import loaders_of
from resolvers.pool_json import pools_json
from resolvers.pools import (
    CreateCreditPoolInput,
    CreateCreditPoolPayload,
    CreditPool,
    selected_pack_pages,
)
from resolvers.preserialized import splicing
from resolvers.request_log import (
    RequestLogConnection,
    RequestLogFilter,
    RequestVolume,
    request_log_page,
    request_volume_series,
)
from resolvers.webhooks import WebhookEndpoint, webhook_endpoints_of


@strawberry.type
class Application:
    id: strawberry.ID
    name: str
    plan: str | None
    created_at: datetime
    row_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: ApplicationRow | ApplicationLine) -> Application:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            plan=row.plan,
            created_at=row.created_at,
            row_id=row.id,
        )

    @strawberry.field(
        description=KEYS_DESCRIPTION.format(who="the organization's or this application's")
    )
    async def api_keys(self, info: Info, first: int = 100) -> list[ApiKey]:
        organization_id = principal_of(info).organization_id
        return await resolve_api_keys(info, organization_id, self.row_id, first)

    @strawberry.field
    async def pools(self, info: Info) -> list[CreditPool]:
        _api_keys_only(info)
        lines = await loaders_of(info).pools.load(self.row_id)
        if splicing(info):  # the list's JSON straight from the lines (resolvers/pool_json.py)
            written = await pools_json(info, self.row_id, lines)
            if written is not None:
                return cast(list[CreditPool], written)
        return [CreditPool.from_row(row) for row in lines]

    @strawberry.field
    async def pool(self, info: Info, key: str) -> CreditPool | None:
        _api_keys_only(info)
        row = await PoolRow.get_or_none(application_id=self.row_id, key=key)
        return None if row is None else CreditPool.from_row(row)

    @strawberry.field(
        description="End Users (Relay connection), in creation order unless `orderBy` says"
        " otherwise; `filter` keeps those in the given states in a pool."
    )
    async def end_users(
        self,
        info: Info,
        first: int = 50,
        after: str | None = None,
        filter: EndUserFilter | None = None,
        order_by: EndUserOrder | None = None,
    ) -> EndUserConnection:
        _api_keys_only(info)
        with errors_as_query_errors():
            return await end_user_page(info, self.row_id, first, after, filter, order_by)

    @strawberry.field(description=SERIES_DESCRIPTION + " Without `pool`, every pool summed.")
    async def consumption(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        granularity: Granularity,
        pool: str | None = None,
        feature: str | None = None,
        end_user_id: strawberry.ID | None = None,
    ) -> ConsumptionSeries:
        _api_keys_only(info)
        pool_id = await pool_id_of(info, self.row_id, pool)
        end_user = None
        if end_user_id is not None:
            end_user = parse_id(end_user_id)
            row = None if end_user is None else await loaders_of(info).end_users.load(end_user)
            if row is None or row.application_id != self.row_id:  # type: ignore[attr-defined]
                raise query_error(NotFound("End User not found", field="endUserId"))
        return await load_series(
            info,
            self.row_id,
            from_,
            to,
            granularity,
            pool_id=pool_id,
            end_user_id=end_user,
            feature=feature,
        )

    @strawberry.field(description="How the pool's credits sit with its End Users.")
    async def allocation_summary(self, info: Info, pool: str) -> AllocationSummary:
        _api_keys_only(info)
        return await allocation_summary_of(info, self.row_id, pool)

    @strawberry.field(description="The request log, newest first (keyset pages, first <= 500).")
    async def request_log(
        self,
        info: Info,
        first: int = 50,
        after: str | None = None,
        filter: RequestLogFilter | None = None,
    ) -> RequestLogConnection:
        _api_keys_only(info)
        return await request_log_page(info, self.row_id, first, after, filter)

    @strawberry.field(description="Requests and errors per UTC bucket, empty buckets included.")
    async def request_volume(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        granularity: Granularity = Granularity.HOUR,
    ) -> RequestVolume:
        _api_keys_only(info)
        return await request_volume_series(self.row_id, from_, to, granularity)

    @strawberry.field(
        description="Low-credit alerts, and webhook endpoints disabled for failing, newest first."
    )
    async def alerts(
        self, info: Info, first: int = 50, after: str | None = None
    ) -> CreditAlertConnection:
        _api_keys_only(info)
        return await alert_page(self.row_id, first, after)

    @strawberry.field(description="Webhook endpoints, oldest first (docs/webhooks.md).")
    async def webhook_endpoints(self, info: Info, first: int = 10) -> list[WebhookEndpoint]:
        return await webhook_endpoints_of(info, self.row_id, first)

    @strawberry.field(description="Billing periods (UTC months), newest first.")
    async def billing_periods(self, info: Info, first: int = 12) -> list[BillingPeriod]:
        return await billing_periods_of(info, self.row_id, first)

    @strawberry.field(
        description="One billing period by its start (the first instant of a UTC month);"
        " null before the application existed or in the future."
    )
    async def billing_period(self, info: Info, start: datetime) -> BillingPeriod | None:
        return await billing_period_of(info, self.row_id, start)

    @strawberry.field(
        description="A signed link to GET /v1/applications/{id}/export for these"
        " parameters, valid for a few minutes (no API key needed to download it)."
    )
    def export_url(
        self,
        info: Info,
        type: ExportType,
        from_: ExportFrom,
        to: datetime,
        format: ExportFormat = ExportFormat.CSV,
    ) -> str:
        return export_url_of(info, self.row_id, type, from_, to, format)

    @strawberry.field(description="One End User, by exactly one of id and externalId.")
    async def end_user(
        self, info: Info, id: strawberry.ID | None = None, external_id: str | None = None
    ) -> EndUser | None:
        if (id is None) == (external_id is None):
            raise query_error(ValidationFailed("give exactly one of id and externalId"))
        if id is not None:
            parsed = parse_id(id)
            row = (
                None
                if parsed is None
                else await EndUserRow.get_or_none(application_id=self.row_id, id=parsed)
            )
        else:
            row = await EndUserRow.get_or_none(application_id=self.row_id, external_id=external_id)
        if row is None:
            raise query_error(NotFound("End User not found"))
        with errors_as_query_errors():
            require_end_user(principal_of(info), row.id)
        return EndUser.from_row(row)


def _api_keys_only(info: Info) -> None:
    with errors_as_query_errors():
        require_api_key(principal_of(info))


async def resolve_applications(info: Info) -> list[Application]:
    principal = principal_of(info)
    query = ApplicationRow.filter(organization_id=principal.organization_id)
    if principal.application_id is not None:
        query = query.filter(id=principal.application_id)
    return [Application.from_row(row) for row in await query.order_by("id")]


async def resolve_application(info: Info, id: strawberry.ID) -> Application | None:
    with errors_as_query_errors():
        application_id = await visible_application(principal_of(info), id)
        firsts = selected_pack_pages(info)
        read = await application_and_pools(application_id, max(firsts, default=None))
    # the pools (and their packs) came with the application: their fields read no statement
    loaders = loaders_of(info)
    loaders.pools.prime(application_id, read.pools)
    for pool_id, packs in (read.packs or {}).items():
        for first in firsts:
            loaders.packs.prime((pool_id, first), packs[:first])
    return Application.from_row(read.application)


@strawberry.input
class CreateApplicationInput:
    name: str
    plan: str | None = None


@strawberry.type
class CreateApplicationPayload:
    application: Application | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(CreateApplicationPayload)
async def resolve_create_application(
    info: Info, input: CreateApplicationInput
) -> CreateApplicationPayload:
    principal = principal_of(info)
    require_write(principal)
    if not principal.organization_scoped:
        raise NotFound("applications are created with an organization key")
    row = await create_application(principal.organization_id, input.name, input.plan)
    return CreateApplicationPayload(application=Application.from_row(row))


@errors_in_payload(CreateCreditPoolPayload)
async def resolve_create_pool(info: Info, input: CreateCreditPoolInput) -> CreateCreditPoolPayload:
    application_id = await writable_application(principal_of(info), input.application_id)
    row = await create_pool(
        application_id,
        input.key,
        input.name,
        low_balance_threshold=input.low_balance_threshold,
        end_user_low_balance_threshold=input.end_user_low_balance_threshold,
    )
    return CreateCreditPoolPayload(pool=CreditPool.from_row(row))


@errors_in_payload(UpsertEndUsersPayload)
async def resolve_upsert_end_users(info: Info, input: UpsertEndUsersInput) -> UpsertEndUsersPayload:
    application_id = await writable_application(principal_of(info), input.application_id)
    rows = await upsert_end_users(
        application_id,
        [DomainEndUserInput(u.external_id, u.name, u.email) for u in input.end_users],
    )
    return UpsertEndUsersPayload(end_users=[EndUser.from_row(row) for row in rows])
