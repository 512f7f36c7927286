"""An application's pools written as JSON straight from their lines, packs and series
(resolvers/preserialized.py): each value as the general path serializes it. A selection
outside the shape, an argument the general path would have to convert or refuse, or a
read that fails leaves the list to the general path, which answers and reports as it
always does."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from models.consumption import Granularity, SeriesKey, bucket_range
from models.pools import PackLine, PoolLine
from resolvers.consumption import SERIES_SHAPE, series_text
from resolvers.context import Info
from resolvers.loaders import loaders_of
from resolvers.pools import MAX_PAGE, PACKS_FIRST
from resolvers.preserialized import (
    Arguments,
    NotPlain,
    Preserialized,
    Selected,
    Shape,
    checked_int,
    encode,
    object_json,
    optional_int,
    optional_text,
    optional_time,
    page_size,
    read_selection,
    text,
)

_POOL: dict[str, Callable[[PoolLine], Any]] = {
    "key": lambda p: text(p.key),
    "name": lambda p: text(p.name),
    "purchased": lambda p: checked_int(p.purchased),
    "allocated": lambda p: checked_int(p.allocated),
    "used": lambda p: checked_int(p.used),
    "remaining": lambda p: checked_int(p.remaining),
    "expired": lambda p: checked_int(p.expired),
    "unallocated": lambda p: checked_int(p.unallocated),
    "status": lambda p: p.status.name,
    "lowBalanceThreshold": lambda p: optional_int(p.low_balance_threshold),
    "endUserLowBalanceThreshold": lambda p: optional_int(p.end_user_low_balance_threshold),
    "version": lambda p: checked_int(p.version),
}
_PACK: dict[str, Callable[[PackLine], Any]] = {
    "id": lambda k: str(k.id),
    "credits": lambda k: checked_int(k.credits),
    "unallocated": lambda k: checked_int(k.unallocated),
    "used": lambda k: checked_int(k.used),
    "expired": lambda k: checked_int(k.expired),
    "remaining": lambda k: checked_int(k.credits - k.used - k.expired),
    "purchasedAt": lambda k: k.purchased_at.isoformat(),
    "expiresAt": lambda k: optional_time(k.expires_at),
    "package": lambda k: optional_text(k.package),
    "reference": lambda k: optional_text(k.reference),
}
POOL_SHAPE: Shape = (
    "CreditPool",
    {
        **dict.fromkeys(_POOL),
        "packs": ("CreditPack", dict.fromkeys(_PACK)),
        "consumption": SERIES_SHAPE,
    },
)
POOL_ARGUMENTS: Arguments = {
    ("CreditPool", "packs"): frozenset({"first"}),
    ("CreditPool", "consumption"): frozenset({"from", "to", "granularity", "feature"}),
}


async def pools_json(
    info: Info, application_id: int, pools: list[PoolLine]
) -> Preserialized | None:
    """The pools' answer for the selection under the field being resolved, or None when
    the general path must answer it."""
    selection = read_selection(info, POOL_SHAPE, POOL_ARGUMENTS)
    if selection is None:
        return None
    loaders = loaders_of(info)
    values: dict[tuple[str, int], Any] = {}  # (response name, pool id) -> its value
    try:
        for part in selection:
            if part.field_name == "packs":
                first = page_size(part, PACKS_FIRST, MAX_PAGE)
                keys = [(pool.id, first) for pool in pools]
                packs = await loaders.packs.load_many(keys)
                for pool, lines in zip(pools, packs, strict=True):
                    values[part.response_name, pool.id] = [
                        object_json(part.below or (), "CreditPack", _reader(_PACK, line))
                        for line in lines
                    ]
            elif part.field_name == "consumption":
                series_keys = _series_keys(part, application_id, pools)
                found = await loaders.series.load_many(series_keys)
                for pool, series in zip(pools, found, strict=True):
                    text = series_text(part.below or (), series)
                    values[part.response_name, pool.id] = orjson.Fragment(text)
        return encode(
            [
                object_json(
                    selection,
                    "CreditPool",
                    lambda s, pool=pool: (
                        values[s.response_name, pool.id]
                        if s.below is not None
                        else _POOL[s.field_name](pool)
                    ),
                )
                for pool in pools
            ]
        )
    except Exception:  # NotPlain, an argument refused (ValidationFailed) or a failed read
        return None


def _reader(readers: dict[str, Callable[[Any], Any]], line: Any) -> Callable[[Selected], Any]:
    return lambda s: readers[s.field_name](line)


def _series_keys(part: Selected, application_id: int, pools: list[PoolLine]) -> list[SeriesKey]:
    """Each pool's series key for `consumption(...)`'s arguments: moments given by
    variables (a literal one is text the general path parses), a granularity by its name
    or as a variable gives it, a feature or none."""
    given = dict(part.arguments)
    start, end, granularity = given.get("from"), given.get("to"), given.get("granularity")
    feature = given.get("feature")
    if type(start) is not datetime or type(end) is not datetime:
        raise NotPlain
    if type(granularity) is str and granularity in Granularity.__members__:
        granularity = Granularity[granularity]
    if type(granularity) is not Granularity or (feature is not None and type(feature) is not str):
        raise NotPlain
    buckets = bucket_range(start, end, granularity)  # (refused: the general path reports)
    return [SeriesKey(application_id, buckets, pool.id, None, feature) for pool in pools]
