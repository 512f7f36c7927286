"""Consumption series (docs/reporting.md): `Application.consumption`, `CreditPool.consumption` and
`EndUser.consumption`, all through one loader (one statement per distinct range)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from models.consumption import Granularity as DomainGranularity
from models.consumption import Series, SeriesKey, bucket_range
from resolvers.context import Info
from resolvers.errors import errors_as_query_errors
from resolvers.loaders import loaders_of

Granularity = strawberry.enum(DomainGranularity, name="Granularity")

SERIES_DESCRIPTION = (
    "Contiguous UTC buckets (weeks start on Monday), empty ones included, over [from, to)"
    " widened to whole buckets. `feature` narrows `used` only."
)


@strawberry.type(description="One bucket: sums of the ledger entries that occurred in it.")
class ConsumptionBucket:
    start: datetime
    used: int
    expired: int
    purchased: int = strawberry.field(
        description="Credits bought into the pool; in an End User's series, credits allocated"
        " to it, net of releases."
    )
    remaining: int = strawberry.field(description="Remaining at the end of the bucket.")
    spike: bool = strawberry.field(
        description="used > median + max(3·1.4826·MAD, median, 1) over the series' buckets."
    )


@strawberry.type
class ConsumptionSeries:
    granularity: Granularity
    buckets: list[ConsumptionBucket]
    total_used: int
    total_expired: int

    @classmethod
    def from_series(cls, series: Series) -> ConsumptionSeries:
        return cls(
            granularity=series.granularity,
            buckets=[
                ConsumptionBucket(
                    start=b.start,
                    used=b.used,
                    expired=b.expired,
                    purchased=b.purchased,
                    remaining=b.remaining,
                    spike=b.spike,
                )
                for b in series.buckets
            ],
            total_used=series.total_used,
            total_expired=series.total_expired,
        )


async def load_series(
    info: Info,
    application_id: int,
    start: datetime,
    end: datetime,
    granularity: DomainGranularity,
    *,
    pool_id: int | None = None,
    end_user_id: int | None = None,
    feature: str | None = None,
) -> ConsumptionSeries:
    with errors_as_query_errors():
        buckets = bucket_range(start, end, granularity)
    key = SeriesKey(application_id, buckets, pool_id, end_user_id, feature)
    return ConsumptionSeries.from_series(await loaders_of(info).series.load(key))
