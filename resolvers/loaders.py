"""DataLoaders: every relation a list resolves (End User balances, pool packs, series, End
Users by id) is fetched for all the list's items at once, so the number of statements a
query runs does not grow with the number of items it returns.

Built fresh for every request (`loaders_of`): their caches live as long as the request and
never serve a later one. A WebSocket connection keeps one context for its lifetime, so a
subscription gets new loaders at every call instead."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from graphql import OperationType
from strawberry.dataloader import DataLoader

from models.allocation_report import BalanceLine, EndUserLine, Ranking, balance_lines, rankings
from models.consumption import Series, SeriesKey, consumption_series
from models.credits import EndUser as EndUserRow
from models.pools import PackLine, PoolLine, newest_packs, pool_lines

PackKey = tuple[int, int]  # (pool id, first)
RankingKey = tuple[int, int, Ranking, int]  # (application id, pool id, ranking, first)
K = TypeVar("K")
T = TypeVar("T")


class SharedLoader(DataLoader[K, T]):
    """A DataLoader whose loads are shielded. graphql-core cancels the sibling fields of one
    whose error nulls their parent; a cancelled field awaiting a load would cancel the load
    itself, and every other field sharing it would fail (a 500) instead of getting it."""

    def load(self, key: K) -> Awaitable[T]:
        return asyncio.shield(super().load(key))

    async def load_many(self, keys: Iterable[K]) -> list[T]:
        # one shield for them all (the base class would gather a shielded load per key)
        loads = [DataLoader.load(self, key) for key in keys]
        return await asyncio.shield(asyncio.gather(*loads))


async def _packs(keys: Sequence[PackKey]) -> list[list[PackLine]]:
    """The newest `first` packs of each pool, in one statement."""
    limit = max(first for _, first in keys)
    by_pool = await newest_packs(sorted({pool_id for pool_id, _ in keys}), limit)
    return [by_pool[pool_id][:first] for pool_id, first in keys]


async def _balances(now: datetime, end_user_ids: Sequence[int]) -> list[list[BalanceLine]]:
    found = await balance_lines(list(end_user_ids), now)
    return [found.get(i, []) for i in end_user_ids]


async def _rankings(now: datetime, keys: Sequence[RankingKey]) -> list[list[EndUserLine]]:
    """The rankings asked for, one statement per pool: a dashboard's two rankings of a
    pool (sibling fields, loaded in the same tick) find the End Users changed since the
    fold once. Each ranking's order is total, so the first n are the start of more."""
    wanted: dict[tuple[int, int], dict[Ranking, int]] = defaultdict(dict)
    for application_id, pool_id, ranking, first in keys:
        firsts = wanted[(application_id, pool_id)]
        firsts[ranking] = max(first, firsts.get(ranking, 0))
    found = {
        pool: await rankings(*pool, firsts, now)  # type: ignore[misc]
        for pool, firsts in wanted.items()
    }
    return [found[(a, p)][ranking][:first] for a, p, ranking, first in keys]


async def _end_users(ids: Sequence[int]) -> list[EndUserRow | None]:
    found = {row.id: row for row in await EndUserRow.filter(id__in=list(ids))}
    return [found.get(i) for i in ids]


async def _pools(application_ids: Sequence[int]) -> list[list[PoolLine]]:
    found: dict[int, list[PoolLine]] = defaultdict(list)
    for line in await pool_lines(list(application_ids)):
        found[line.application_id].append(line)
    return [found[i] for i in application_ids]


class Loaders:
    """The loaders of one request, and the one `now` its figures are computed at.

    The load functions do not refer back to this object: a bound method would close a
    reference cycle through every loader's cache, and a dashboard's whole answer (~800
    objects) would then wait for the cyclic collector instead of being freed with the
    request; under load those collections paused the server visibly and often."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.balances = SharedLoader(partial(_balances, self.now))
        self.packs = SharedLoader(_packs)
        self.series = SharedLoader(consumption_series)
        self.end_users = SharedLoader(_end_users)
        self.pools = SharedLoader(_pools)
        self.rankings = SharedLoader(partial(_rankings, self.now))

    async def series_of(self, key: SeriesKey) -> Series:
        return await self.series.load(key)


def loaders_of(info: object) -> Loaders:
    """This request's loaders (a subscription's: new ones at every call)."""
    operation = getattr(info, "operation", None)
    context = info.context  # type: ignore[attr-defined]
    if operation is not None and operation.operation == OperationType.SUBSCRIPTION:
        return Loaders()
    loaders = context.cache.get("loaders")
    if loaders is None:
        loaders = context.cache["loaders"] = Loaders()
    return loaders
