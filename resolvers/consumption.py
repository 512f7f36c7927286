"""Consumption series (docs/reporting.md): `Application.consumption`, `CreditPool.consumption` and
`EndUser.consumption`, all through one loader (one statement per distinct range)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import orjson
import strawberry

from models.consumption import Granularity as DomainGranularity
from models.consumption import Series, SeriesKey, bucket_range, iso_starts
from resolvers.context import Info
from resolvers.errors import errors_as_query_errors
from resolvers.loaders import loaders_of
from resolvers.preserialized import (
    INT_MAX,
    INT_MIN,
    NotPlain,
    Preserialized,
    Selected,
    Shape,
    checked_int,
    object_json,
    objects_of_columns,
    read_selection,
    splicing,
)

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
    series = await loaders_of(info).series.load(key)
    selection = read_selection(info, SERIES_SHAPE) if splicing(info) else None
    if selection is not None:
        try:  # its JSON straight from the buckets (resolvers/preserialized.py)
            return cast(ConsumptionSeries, Preserialized(series_text(selection, series)))
        except NotPlain:
            pass  # the general path answers it, and reports what it reports
    return ConsumptionSeries.from_series(series)


_RENDERED_PER_SERIES = 2  # selections kept with a series (a page asks one or two)


def series_text(selection: tuple[Selected, ...], series: Series) -> bytes:
    """The series' JSON text for `selection` (`series_json`), kept with the series: one
    read again unchanged (models.consumption keeps a pool's until its facts change, and only
    short ones: a series it does not keep goes with its request) is not written again.
    Raises NotPlain as `series_json` does."""
    written = series.rendered.get(selection)
    if written is None:
        written = orjson.dumps(series_json(selection, series))
        if len(series.rendered) >= _RENDERED_PER_SERIES:
            series.rendered.clear()
        series.rendered[selection] = written  # (bytes: every answer shares them as they are)
    return cast(bytes, written)


# A bucket's fields, each as a column of the series (Ints checked to fit 32 bits).
_COLUMNS: dict[str, Any] = {
    "start": lambda s: iso_starts(s.range),
    "used": lambda s: _ints(s.used),
    "expired": lambda s: _ints(s.expired),
    "purchased": lambda s: _ints(s.purchased),
    "remaining": lambda s: _ints(s.remaining),
    "spike": lambda s: s.spike,
}
SERIES_SHAPE: Shape = (
    "ConsumptionSeries",
    {
        "granularity": None,
        "totalUsed": None,
        "totalExpired": None,
        "buckets": ("ConsumptionBucket", dict.fromkeys(_COLUMNS)),
    },
)


def _ints(column: list[int]) -> list[int]:
    """A column of Ints as GraphQL serializes them; beyond 32 bits, the general path."""
    if column and (min(column) < INT_MIN or max(column) > INT_MAX):
        raise NotPlain
    return column


def _buckets_json(selection: tuple[Selected, ...], series: Series) -> list[dict[str, Any]]:
    # column by column, then zipped: a series has hundreds of buckets
    columns = [
        ["ConsumptionBucket"] * series.range.count
        if s.field_name == "__typename"
        else _COLUMNS[s.field_name](series)
        for s in selection
    ]
    return objects_of_columns([s.response_name for s in selection], columns)


def series_json(selection: tuple[Selected, ...], series: Series) -> dict[str, Any]:
    """The series' answer for `selection` (read with SERIES_SHAPE), each value as the
    general path serializes it."""

    def value_of(part: Selected) -> Any:
        name = part.field_name
        if name == "buckets":
            return _buckets_json(part.below or (), series)
        if name == "granularity":
            return series.granularity.name
        return checked_int(series.total_used if name == "totalUsed" else series.total_expired)

    return object_json(selection, "ConsumptionSeries", value_of)
