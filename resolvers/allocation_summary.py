"""`Application.allocationSummary(pool)` (docs/reporting.md): how a pool's credits sit with its End
Users, who uses most, who runs out first, and whether the pool must allocate more soon."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import orjson
import strawberry

from models.allocation_report import (
    HORIZON_DAYS,
    EndUserLine,
    Ranked,
    RankedAsJson,
    Ranking,
    allocation_summary,
    summary_and_ranked,
)
from models.allocation_report import (
    AllocationSummary as Figures,
)
from resolvers.context import Info
from resolvers.end_user_json import RANKED_SHAPE, ranked_entries, ranked_json
from resolvers.end_users import EndUser, EndUserBalance, pool_id_of
from resolvers.errors import errors_as_query_errors
from resolvers.loaders import loaders_of
from resolvers.pools import MAX_PAGE, check_page_size, selected_pages
from resolvers.preserialized import (
    Arguments,
    NotPlain,
    Selected,
    Shape,
    checked_float,
    checked_int,
    encode,
    object_json,
    page_size,
    read_selection,
    splicing,
    text,
)
from resolvers.selection import PerField

NEEDS_ALLOCATION = (
    f"True when the End Users' projected use of the next {HORIZON_DAYS} days that their own"
    " credits do not cover (Σ max(0, 7 * burnRatePerDay - remaining), see"
    " projectedShortfall) is more than the pool's unallocated credits."
)


RANKING_FIRST = 10  # a ranking's `first` by default


@strawberry.type
class AllocationSummary:
    pool: str
    end_users_total: int = strawberry.field(description="End Users of the application.")
    with_allocation: int = strawberry.field(description="End Users allocated credits (net).")
    with_credits: int = strawberry.field(description="End Users with remaining > 0.")
    low: int = strawberry.field(description="End Users whose balance is LOW.")
    exhausted: int = strawberry.field(description="End Users allocated credits, none left.")
    allocated: int
    used: int
    remaining: int = strawberry.field(description="Credits the End Users still hold.")
    unallocated: int
    burn_rate_per_day: float = strawberry.field(description="The pool's mean daily use (7 days).")
    projected_shortfall: int = strawberry.field(
        description=f"Credits the End Users will lack in the next {HORIZON_DAYS} days at"
        " their burn rates (rounded up)."
    )
    needs_allocation: bool = strawberry.field(description=NEEDS_ALLOCATION)
    application_id: strawberry.Private[int]
    pool_id: strawberry.Private[int]

    async def _ranked(self, info: Info, ranking: Ranking, first: int) -> list[EndUserBalance]:
        with errors_as_query_errors():
            check_page_size(first)
        key = (self.application_id, self.pool_id, ranking, first)
        lines = await loaders_of(info).rankings.load(key)
        return [
            EndUserBalance.from_line(line.balance, EndUser.from_row(line))
            for line in lines
            if line.balance
        ]

    @strawberry.field(description="End Users by credits used in the pool, most first.")
    async def top_consumers(self, info: Info, first: int = RANKING_FIRST) -> list[EndUserBalance]:
        return await self._ranked(info, Ranking.TOP_CONSUMERS, first)

    @strawberry.field(
        description="End Users holding credits and using them, soonest projected exhaustion first."
    )
    async def close_to_running_out(
        self, info: Info, first: int = RANKING_FIRST
    ) -> list[EndUserBalance]:
        return await self._ranked(info, Ranking.CLOSE_TO_RUNNING_OUT, first)


async def allocation_summary_of(info: Info, application_id: int, pool: str) -> AllocationSummary:
    pool_id = await pool_id_of(info, application_id, pool)
    assert pool_id is not None
    loaders = loaders_of(info)
    pages = selected_rankings(info)
    selection = read_selection(info, SUMMARY_SHAPE, SUMMARY_ARGUMENTS) if splicing(info) else None
    ranked = None
    if pages:
        # the rankings asked for come with the summary: their fields read no statement
        firsts = {ranking: max(page) for ranking, page in pages.items()}
        as_json = () if selection is None else ranked_as_json(selection, frozenset(firsts))
        figures, ranked = await summary_and_ranked(
            application_id, pool_id, firsts, loaders.now, as_json
        )
    else:
        figures = await allocation_summary(application_id, pool_id, loaders.now)
    if selection is not None:
        try:  # its JSON straight from the figures and ranked lines (resolvers/preserialized.py)
            return cast(AllocationSummary, encode(summary_json(selection, pool, figures, ranked)))
        except NotPlain:
            pass  # the general path answers it, and reports what it reports
    if ranked is not None:
        lines = ranked.lines()
        for ranking, page in pages.items():
            for first in page:
                loaders.rankings.prime(
                    (application_id, pool_id, ranking, first), lines[ranking][:first]
                )
    return AllocationSummary(
        pool=pool,
        end_users_total=figures.end_users_total,
        with_allocation=figures.with_allocation,
        with_credits=figures.with_credits,
        low=figures.low,
        exhausted=figures.exhausted,
        allocated=figures.allocated,
        used=figures.used,
        remaining=figures.remaining,
        unallocated=figures.unallocated,
        burn_rate_per_day=figures.burn_rate_per_day,
        projected_shortfall=int(-(-figures.shortfall // 1)),
        needs_allocation=figures.needs_allocation,
        application_id=application_id,
        pool_id=pool_id,
    )


_RANKED_FIELDS = {
    Ranking.TOP_CONSUMERS: "topConsumers",
    Ranking.CLOSE_TO_RUNNING_OUT: "closeToRunningOut",
}
_RANKING_PAGES: dict[Ranking, PerField[frozenset[int]]] = {
    ranking: PerField() for ranking in Ranking
}


def selected_rankings(info: Info) -> dict[Ranking, frozenset[int]]:
    """The `first` of every ranking field under the summary being resolved, by ranking, so
    that the summary may read them with its figures (none for a ranking not asked for, or
    not as a plain valid page: see `selected_pages`)."""
    found = {}
    for ranking, field in _RANKED_FIELDS.items():
        pages = selected_pages(info, (field,), RANKING_FIRST, _RANKING_PAGES[ranking])
        if pages:
            found[ranking] = pages
    return found


# The summary's plain fields, each from the figures (Ints checked to fit 32 bits).
_FIGURES: dict[str, Callable[[Figures], Any]] = {
    "endUsersTotal": lambda f: checked_int(f.end_users_total),
    "withAllocation": lambda f: checked_int(f.with_allocation),
    "withCredits": lambda f: checked_int(f.with_credits),
    "low": lambda f: checked_int(f.low),
    "exhausted": lambda f: checked_int(f.exhausted),
    "allocated": lambda f: checked_int(f.allocated),
    "used": lambda f: checked_int(f.used),
    "remaining": lambda f: checked_int(f.remaining),
    "unallocated": lambda f: checked_int(f.unallocated),
    "burnRatePerDay": lambda f: checked_float(f.burn_rate_per_day),
    "projectedShortfall": lambda f: checked_int(int(-(-f.shortfall // 1))),
    "needsAllocation": lambda f: f.needs_allocation,
}
_RANKINGS = {name: ranking for ranking, name in _RANKED_FIELDS.items()}
SUMMARY_SHAPE: Shape = (
    "AllocationSummary",
    {"pool": None, **dict.fromkeys(_FIGURES), **dict.fromkeys(_RANKINGS, RANKED_SHAPE)},
)
SUMMARY_ARGUMENTS: Arguments = {
    ("AllocationSummary", name): frozenset({"first"}) for name in _RANKINGS
}


def ranked_as_json(selection: tuple[Selected, ...], asked: frozenset[Ranking]) -> RankedAsJson:
    """The rankings of `selection` among those `asked` whose balances the database can
    write as JSON: those selected with one selection (under any aliases) of plain or burn
    fields (`ranked_entries`)."""
    found: dict[Ranking, set[tuple[Selected, ...] | None]] = {}
    for part in selection:
        ranking = _RANKINGS.get(part.field_name)
        if ranking in asked:
            found.setdefault(ranking, set()).add(part.below)
    written = []
    for ranking, belows in found.items():
        below = next(iter(belows))
        entries = ranked_entries(below) if len(belows) == 1 and below else None
        if entries is not None:
            written.append((ranking, entries))
    return tuple(written)


def summary_json(
    selection: tuple[Selected, ...],
    pool: str,
    figures: Figures,
    ranked: Ranked | None,
) -> dict[str, Any]:
    """The summary's answer for `selection` (read with SUMMARY_SHAPE), each value as the
    general path serializes it; the rankings from `ranked`, which must hold every page
    asked for (read with the summary): the texts the database wrote, else the lines."""
    lines: dict[Ranking, list[EndUserLine]] | None = None

    def value_of(part: Selected) -> Any:
        nonlocal lines
        name = part.field_name
        if name == "pool":
            return text(pool)
        ranking = _RANKINGS.get(name)
        if ranking is None:
            return _FIGURES[name](figures)
        if ranked is None or ranking not in ranked.asked:
            raise NotPlain  # not read with the summary
        first = page_size(part, RANKING_FIRST, MAX_PAGE)
        texts = ranked.texts.get(ranking)
        if texts is not None:
            return orjson.Fragment("[" + ",".join(texts[:first]) + "]")
        if lines is None:
            lines = ranked.lines()
        found = lines[ranking][:first]
        return ranked_json(part.below or (), [line for line in found if line.balance])

    return object_json(selection, "AllocationSummary", value_of)
