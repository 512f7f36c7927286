"""End Users, their balances, and the End User connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Generic, TypeVar, cast

import strawberry

from models.allocation_report import (
    BalanceLine,
    Burn,
    EndUserLine,
    Listing,
    OrderField,
    Page,
    StatusFilter,
    balance_lines,
    write_burns,
)
from models.allocation_report import end_user_page as report_page
from models.balances import EndUserBalanceSnapshot
from models.credits import EndUser as EndUserRow
from models.errors import NotFound, ValidationFailed, excerpt
from models.references import EndUserRef as DomainEndUserRef
from models.references import parse_id
from resolvers.consumption import (
    SERIES_DESCRIPTION,
    ConsumptionSeries,
    Granularity,
    load_series,
)
from resolvers.context import Info
from resolvers.cursors import cursor_value, encode_cursor
from resolvers.end_user_json import (
    CONNECTION_ARGUMENTS,
    CONNECTION_SHAPE,
    Balances,
    connection_json,
    page_json,
    selects_balances,
    selects_burn,
    selects_pool_balance,
)
from resolvers.errors import UserError, query_error
from resolvers.loaders import loaders_of
from resolvers.pools import BalanceStatus, check_page_size
from resolvers.preserialized import (
    NotPlain,
    Preserialized,
    Selected,
    encode,
    read_selection,
    splicing,
)
from resolvers.runtime.plain_lists import PRELOADED
from resolvers.selection import selects


@strawberry.input(description="Exactly one of id and externalId.")
class EndUserRef:
    id: strawberry.ID | None = None
    external_id: str | None = None

    def to_domain(self) -> DomainEndUserRef:
        if self.id is not None and self.external_id is None:
            parsed = parse_id(self.id)
            # An id that cannot be ours names nobody: keep it valid but unmatched.
            return DomainEndUserRef(id=parsed if parsed is not None else 2**63 - 1)
        return DomainEndUserRef(id=None if self.id is None else -1, external_id=self.external_id)


T = TypeVar("T")


class _Later(Generic[T]):
    """A field value read only if the query selects it: awaitable, and its work starts when
    awaited. A write's result does not know its burn (the report reads it), so its plain
    fields hold these; graphql-core awaits whatever a field gives it."""

    __slots__ = ("_compute",)

    def __init__(self, compute: Callable[[], Awaitable[T]]) -> None:
        self._compute = compute

    def __await__(self) -> Generator[Any, None, T]:
        return self._compute().__await__()


class _WrittenBalance:
    """What a write's result does not know about its balance, read when selected."""

    __slots__ = ("info", "snapshot")

    def __init__(self, info: Info, snapshot: EndUserBalanceSnapshot) -> None:
        self.info = info
        self.snapshot = snapshot

    async def _line(self) -> BalanceLine | None:
        for line in await loaders_of(self.info).balances.load(self.snapshot.end_user_id):
            if line.pool_id == self.snapshot.pool_id:
                return line
        return None

    async def _burn(self) -> Burn:
        line = await self._line()
        if line is None:
            return Burn(0, self.snapshot.remaining, loaders_of(self.info).now)
        return Burn(line.burn.window_used, self.snapshot.remaining, line.burn.now)

    async def threshold(self) -> int | None:
        line = await self._line()
        return None if line is None else line.threshold

    async def rate_per_day(self) -> float:
        return (await self._burn()).rate_per_day

    async def exhaustion_at(self) -> datetime | None:
        return (await self._burn()).exhaustion_at

    async def end_user(self) -> EndUser | None:
        row = await loaders_of(self.info).end_users.load(self.snapshot.end_user_id)
        return None if row is None else EndUser.from_row(row)


BURN_RATE = (
    "Mean daily use over the last 7 days (since the start of the UTC hour 7 days ago, divided"
    " by that window's length in days)."
)


# Plain fields only (the lists of a dashboard complete them without a resolver call each,
# resolvers/runtime/plain_lists.py); a write's result holds `_Later` values where it knows less.
@strawberry.type
class EndUserBalance:
    pool: str
    allocated: int
    used: int
    remaining: int
    expired: int
    status: BalanceStatus
    version: int
    low_balance_threshold: int | None = strawberry.field(
        description="The End User's own threshold, else the pool's default."
    )
    burn_rate_per_day: float = strawberry.field(description=BURN_RATE)
    projected_exhaustion_at: datetime | None = strawberry.field(
        description="now + remaining / burnRatePerDay; null when that rate is 0."
    )
    end_user: EndUser | None
    end_user_id: strawberry.Private[int]
    pool_id: strawberry.Private[int]

    @classmethod
    def from_snapshot(
        cls, info: Info, pool_key: str, snapshot: EndUserBalanceSnapshot
    ) -> EndUserBalance:
        """A write's result: the counters it returned; the rest read if selected."""
        unknown = _WrittenBalance(info, snapshot)
        return cls(
            pool=pool_key,
            allocated=snapshot.allocated,
            used=snapshot.used,
            remaining=snapshot.remaining,
            expired=snapshot.expired,
            status=snapshot.status,
            version=snapshot.version,
            low_balance_threshold=cast(int | None, _Later(unknown.threshold)),
            burn_rate_per_day=cast(float, _Later(unknown.rate_per_day)),
            projected_exhaustion_at=cast(datetime | None, _Later(unknown.exhaustion_at)),
            end_user=cast(EndUser | None, _Later(unknown.end_user)),
            end_user_id=snapshot.end_user_id,
            pool_id=snapshot.pool_id,
        )

    @classmethod
    def from_line(cls, line: BalanceLine, owner: EndUser) -> EndUserBalance:
        """A balance as the report reads it, of End User `owner`."""
        return cls(
            pool=line.pool_key,
            allocated=line.allocated,
            used=line.used,
            remaining=line.remaining,
            expired=line.expired,
            status=line.status,
            version=line.version,
            low_balance_threshold=line.threshold,
            burn_rate_per_day=line.burn.rate_per_day,
            projected_exhaustion_at=line.burn.exhaustion_at,
            end_user=owner,
            end_user_id=line.end_user_id,
            pool_id=line.pool_id,
        )


@strawberry.type
class EndUser:
    id: strawberry.ID
    external_id: str
    name: str | None
    email: str | None
    created_at: datetime
    row_id: strawberry.Private[int]
    application_id: strawberry.Private[int]
    # balance lines loaded with the list this End User came in (None: `balances` loads them)
    preloaded_lines: strawberry.Private[list[BalanceLine] | None] = None

    @classmethod
    def from_row(cls, row: EndUserRow | EndUserLine) -> EndUser:
        """From the ORM's row or a raw read's line (the same attributes)."""
        return cls(
            id=strawberry.ID(str(row.id)),
            external_id=row.external_id,
            name=row.name,
            email=row.email,
            created_at=row.created_at,
            row_id=row.id,
            application_id=row.application_id,  # type: ignore[union-attr]
        )

    @strawberry.field(
        description="The End User's balance in every pool of the application.",
        metadata={PRELOADED: "preloaded_balances"},
    )
    async def balances(self, info: Info) -> list[EndUserBalance]:
        preloaded = self.preloaded_balances
        if preloaded is not None:
            return preloaded
        return self._balances_of(await loaders_of(info).balances.load(self.row_id))

    def preload_balances(self, lines: list[BalanceLine]) -> None:
        self.preloaded_lines = lines

    @property
    def preloaded_balances(self) -> list[EndUserBalance] | None:
        """The preloaded balances, made when read: kept on this End User, balances that
        refer back to it would form a reference cycle per End User, left to the cyclic
        collector (whose pauses then show in the latency tail)."""
        return None if self.preloaded_lines is None else self._balances_of(self.preloaded_lines)

    def _balances_of(self, lines: list[BalanceLine]) -> list[EndUserBalance]:
        return [EndUserBalance.from_line(line, self) for line in lines]

    @strawberry.field
    async def balance(self, info: Info, pool: str) -> EndUserBalance | None:
        for line in await loaders_of(info).balances.load(self.row_id):
            if line.pool_key == pool:
                return EndUserBalance.from_line(line, self)
        return None

    @strawberry.field(description=SERIES_DESCRIPTION)
    async def consumption(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        granularity: Granularity,
        pool: str | None = None,
        feature: str | None = None,
    ) -> ConsumptionSeries:
        pool_id = await pool_id_of(info, self.application_id, pool)
        return await load_series(
            info,
            self.application_id,
            from_,
            to,
            granularity,
            pool_id=pool_id,
            end_user_id=self.row_id,
            feature=feature,
        )


async def pool_id_of(info: Info, application_id: int, key: str | None) -> int | None:
    """The id of the application's pool `key` (None for None); NOT_FOUND if none."""
    if key is None:
        return None
    for row in await loaders_of(info).pools.load(application_id):
        if row.key == key:
            return row.id
    raise query_error(NotFound(f"no credit pool {excerpt(key)} in this application", field="pool"))


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class EndUserEdge:
    cursor: str
    node: EndUser


@strawberry.type
class EndUserConnection:
    edges: list[EndUserEdge]
    page_info: PageInfo
    total_count: int


AllocationStatus = strawberry.enum(
    StatusFilter,
    name="AllocationStatus",
    description="An End User's state in one pool: OK, LOW, EXHAUSTED (was allocated credits,"
    " none left) or NO_ALLOCATION (never allocated any, net of releases).",
)
EndUserOrderField = strawberry.enum(OrderField, name="EndUserOrderField")


@strawberry.enum
class OrderDirection(Enum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.input(description="End Users whose balance in `pool` is in one of `status`.")
class EndUserFilter:
    pool: str
    status: list[AllocationStatus] | None = None  # type: ignore[valid-type]


@strawberry.input(
    description="CREATED (default), or by the balance in `pool` (default: the filter's):"
    " USED, REMAINING, PROJECTED_EXHAUSTION (soonest first ascending; End Users using"
    " nothing never run out and come last). Ties by id."
)
class EndUserOrder:
    field: EndUserOrderField  # type: ignore[valid-type]
    direction: OrderDirection = OrderDirection.ASC
    pool: str | None = None


def end_user_cursor(order: OrderField, key: Any, row_id: int) -> str:
    if order == OrderField.CREATED:
        return encode_cursor("EndUser", str(row_id))
    return encode_cursor("EndUser", f"{order.value}:{key!r}:{row_id}")


def _sort_position(order: OrderField) -> Callable[[str], tuple[Any, int]]:
    """How a cursor's value made for `order` reads as (sort key, id)."""

    def position(value: str) -> tuple[Any, int]:
        parts = value.split(":")
        if order == OrderField.CREATED and len(parts) == 1:
            return int(parts[0]), int(parts[0])
        if len(parts) == 3 and parts[0] == order.value:
            number = float if order == OrderField.PROJECTED_EXHAUSTION else int
            return number(parts[1]), int(parts[2])
        raise ValueError(value)

    return position


async def end_user_page(
    info: Info,
    application_id: int,
    first: int,
    after: str | None,
    filter: EndUserFilter | None = None,
    order_by: EndUserOrder | None = None,
) -> EndUserConnection:
    check_page_size(first)
    order = OrderField(order_by.field.value) if order_by else OrderField.CREATED
    pool_key = (order_by.pool if order_by else None) or (filter.pool if filter else None)
    if filter is not None and order_by is not None and order_by.pool not in (None, filter.pool):
        raise ValidationFailed("filter and orderBy must name the same pool", field="orderBy")
    pool_id = await pool_id_of(info, application_id, pool_key)
    listing = Listing(
        pool_id=pool_id,
        statuses=tuple(StatusFilter(s.value) for s in (filter.status or [])) if filter else (),
        order=order,
        descending=order_by is not None and order_by.direction == OrderDirection.DESC,
    )
    refusal = "after is not a cursor of this connection and order"
    cursor = (
        None if after is None else cursor_value(after, "EndUser", _sort_position(order), refusal)
    )
    now = loaders_of(info).now
    selection = (
        read_selection(info, CONNECTION_SHAPE, CONNECTION_ARGUMENTS) if splicing(info) else None
    )
    as_json = None if selection is None else page_json(selection)
    page = await report_page(application_id, listing, first, cursor, now, as_json)
    if selection is not None:
        try:
            return cast(EndUserConnection, await _preserialized(selection, page, order, now))
        except NotPlain:  # the general path answers, and reports what it reports
            if page.node_texts is not None:  # read as nodes only: read it whole
                page = await report_page(application_id, listing, first, cursor, now)
    edges = [
        EndUserEdge(
            cursor=end_user_cursor(order, line.sort_key, line.id), node=EndUser.from_row(line)
        )
        for line in page.lines
    ]
    if edges and selects(info, ("edges", "node", "balances")):
        # loaded now, all at once, so the page completes without a resolver per End User
        # (resolvers.runtime.plain_lists.PRELOADED); through the loader, shared with other fields
        loaded = await loaders_of(info).balances.load_many([edge.node.row_id for edge in edges])
        for edge, lines in zip(edges, loaded, strict=True):
            edge.node.preload_balances(lines)
    return EndUserConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
        ),
        total_count=page.total,
    )


async def _preserialized(
    selection: tuple[Selected, ...], page: Page, order: OrderField, now: datetime
) -> Preserialized:
    """The page as JSON, its End Users' balances read in one statement when selected
    (written by the database itself where it can)."""
    ids = [end_user_id for end_user_id, _ in page.keys]
    balances = Balances()
    if page.node_texts is not None:  # the database wrote the nodes, balances included
        balances = Balances(nodes=write_burns(page.node_texts, now))
    elif page.balance_texts is not None:  # the database wrote them with the page
        balances = Balances(texts=write_burns(page.balance_texts, now))
    if (
        ids
        and balances.nodes is None
        and (
            selects_pool_balance(selection)
            or (balances.texts is None and selects_balances(selection))
        )
    ):
        burn = selects_burn(selection)
        lines = await balance_lines(ids, now, burn=burn)
        balances = Balances(lines=lines, texts=balances.texts)
    keys = page.keys

    def cursor_of(index: int) -> str:
        end_user_id, key = keys[index]
        return end_user_cursor(order, key, end_user_id)

    return encode(
        connection_json(
            selection, page.lines, cursor_of, len(keys), balances, page.has_next, page.total
        )
    )


@strawberry.input
class EndUserInput:
    external_id: str
    name: str | None = None
    email: str | None = None


@strawberry.input
class UpsertEndUsersInput:
    application_id: strawberry.ID
    end_users: list[EndUserInput]


@strawberry.type
class UpsertEndUsersPayload:
    end_users: list[EndUser] | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)
