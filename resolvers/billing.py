"""Billing records (docs/billing-and-export.md#billing-periods) and export links
(docs/billing-and-export.md#export) of an application."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

import strawberry

from models import billing
from models.access import require_api_key
from models.export_links import LINK_TTL, sign_export
from models.exports import ExportFormat as DomainExportFormat
from models.exports import ExportSpec
from models.exports import ExportType as DomainExportType
from resolvers.context import Info, principal_of
from resolvers.errors import errors_as_query_errors

BillingPeriodStatus = strawberry.enum(billing.PeriodStatus, name="BillingPeriodStatus")
ExportType = strawberry.enum(DomainExportType, name="ExportType")
ExportFormat = strawberry.enum(DomainExportFormat, name="ExportFormat")


@strawberry.type(description="One package's lots in one pool; remaining at the period's end.")
class BillingPackage:
    package: str | None = strawberry.field(description="null: lots bought without a package")
    purchased: int
    used: int
    expired: int
    remaining: int


@strawberry.type(description="One pool's figures in a billing period.")
class BillingPool:
    pool: str
    name: str
    opening_remaining: int = strawberry.field(description="purchased - used - expired at start")
    purchased: int
    used: int
    expired: int
    allocated: int = strawberry.field(description="allocated to End Users, net of releases")
    closing_remaining: int
    end_user_usage: int
    active_end_users: int = strawberry.field(description="End Users who consumed at least once")
    packages: list[BillingPackage]


@strawberry.type(
    description="A calendar month in UTC. Holds the ledger entries booked in it (their"
    " createdAt, not occurredAt). OPEN: computed live from the ledger; CLOSED: the record"
    " written once after the month ended, never changed."
)
class BillingPeriod:
    start: datetime
    end: datetime
    status: BillingPeriodStatus
    closed_at: datetime | None
    pools: list[BillingPool]
    end_user_usage: int
    active_end_users: int = strawberry.field(description="distinct across pools")

    @classmethod
    def from_domain(cls, period: billing.BillingPeriod) -> BillingPeriod:
        pools = []
        for pool in period.pools:  # the domain figures carry the same field names
            figures = asdict(pool)
            packages = [BillingPackage(**package) for package in figures.pop("packages")]
            pools.append(BillingPool(**figures, packages=packages))
        return cls(
            start=period.start,
            end=period.end,
            status=period.status,
            closed_at=period.closed_at,
            end_user_usage=period.end_user_usage,
            active_end_users=period.active_end_users,
            pools=pools,
        )


async def billing_periods_of(info: Info, application_id: int, first: int) -> list[BillingPeriod]:
    with errors_as_query_errors():
        require_api_key(principal_of(info))
        periods = await billing.billing_periods(application_id, first)
    return [BillingPeriod.from_domain(period) for period in periods]


async def billing_period_of(
    info: Info, application_id: int, start: datetime
) -> BillingPeriod | None:
    with errors_as_query_errors():
        require_api_key(principal_of(info))
        period = await billing.billing_period(application_id, start)
    return None if period is None else BillingPeriod.from_domain(period)


ExportFrom = Annotated[datetime, strawberry.argument(name="from")]


def export_url_of(
    info: Info,
    application_id: int,
    type: DomainExportType,
    start: datetime,
    end: datetime,
    format: DomainExportFormat,
) -> str:
    """A link to GET /v1/applications/{id}/export, signed for these parameters and valid
    for a few minutes: a browser downloads it without an API key."""
    principal = principal_of(info)
    with errors_as_query_errors():
        require_api_key(principal)
        spec = ExportSpec(application_id, type, start, end, format).validated()
    link = sign_export(info.context.secret, spec, principal.api_key_id, LINK_TTL)
    query = urlencode(
        {
            "type": spec.type.value,
            "from": _stamp(spec.start),
            "to": _stamp(spec.end),
            "format": spec.format.value,
            "signature": link.signature,
        }
    )
    base = (info.context.public_url or str(info.context.request.base_url)).rstrip("/")
    return f"{base}/v1/applications/{application_id}/export?{query}"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
