"""Credit pools and their packs (lots)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from models.balance_rules import BalanceStatus as DomainBalanceStatus
from models.balances import PoolSnapshot
from models.credits import CreditPack as PackRow
from models.credits import CreditPool as PoolRow
from models.errors import ValidationFailed
from models.pools import PackLine, PoolLine
from resolvers.consumption import (
    SERIES_DESCRIPTION,
    ConsumptionSeries,
    Granularity,
    load_series,
)
from resolvers.context import Info
from resolvers.errors import UserError, query_error
from resolvers.loaders import loaders_of
from resolvers.preserialized import given_first
from resolvers.selection import PerField, selected_arguments

BalanceStatus = strawberry.enum(DomainBalanceStatus, name="BalanceStatus")
MAX_PAGE = 500
PACKS_FIRST = 100  # packs(first:)'s default


def check_page_size(first: int) -> None:
    """`first` of every list field: 0 to MAX_PAGE, else VALIDATION (never a silent clamp)."""
    if not 0 <= first <= MAX_PAGE:
        raise ValidationFailed(f"first must be between 0 and {MAX_PAGE}", field="first")


def selected_pack_pages(info: Info) -> frozenset[int]:
    """The `first` of every `pools { packs(first:) }` under the field being resolved, so
    that its resolver may read those packs with the pools (see `selected_pages`)."""
    return selected_pages(info, ("pools", "packs"), PACKS_FIRST, _PACK_PAGES)


def selected_pages(
    info: Info, path: tuple[str, ...], default: int, kept: PerField[frozenset[int]]
) -> frozenset[int]:
    """The `first` (`default` where absent) of every list field at `path` under the field
    being resolved, so that its resolver may read those pages with its own; empty when any
    is not a plain valid page (a directive, a bad `first`): the list's resolver then reads
    and reports as it would. Kept in `kept` per operation and field when every `first` is
    a literal."""
    found, pages = kept.get(info)
    if found and pages is not None:
        return pages
    selected = selected_arguments(info, path)
    firsts: set[int] = set()
    literal = True
    for arguments in selected or ():
        given = arguments.get("first", default)  # (absent: the document's say too)
        if "first" in arguments and type(given) is not str:
            literal = False  # a variable's value (an Int variable comes as an int)
        first = given_first(given, MAX_PAGE)
        if first is None:
            firsts = set()
            break
        firsts.add(first)
    pages = frozenset(firsts)
    if literal:
        kept.put(info, pages)
    return pages


_PACK_PAGES: PerField[frozenset[int]] = PerField()


@strawberry.type
class CreditPack:
    id: strawberry.ID
    credits: int
    unallocated: int
    used: int
    expired: int
    remaining: int = strawberry.field(description="credits - used - expired")
    purchased_at: datetime
    expires_at: datetime | None
    package: str | None
    reference: str | None

    @classmethod
    def from_row(cls, row: PackRow | PackLine) -> CreditPack:
        return cls(
            id=strawberry.ID(str(row.id)),
            credits=row.credits,
            unallocated=row.unallocated,
            used=row.used,
            expired=row.expired,
            remaining=row.credits - row.used - row.expired,
            purchased_at=row.purchased_at,
            expires_at=row.expires_at,
            package=row.package,
            reference=row.reference,
        )


@strawberry.type
class CreditPool:
    key: str
    name: str
    purchased: int
    allocated: int
    used: int
    remaining: int
    expired: int
    unallocated: int
    status: BalanceStatus
    low_balance_threshold: int | None
    end_user_low_balance_threshold: int | None
    version: int
    pool_id: strawberry.Private[int]
    application_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: PoolRow | PoolLine) -> CreditPool:
        return cls(
            key=row.key,
            name=row.name,
            purchased=row.purchased,
            allocated=row.allocated,
            used=row.used,
            remaining=row.remaining,
            expired=row.expired,
            unallocated=row.unallocated,
            status=row.status,
            low_balance_threshold=row.low_balance_threshold,
            end_user_low_balance_threshold=row.end_user_low_balance_threshold,
            version=row.version,
            pool_id=row.id,
            application_id=row.application_id,  # type: ignore[attr-defined]
        )

    @classmethod
    def from_snapshot(cls, snapshot: PoolSnapshot, row: PoolRow) -> CreditPool:
        """The pool as a write left it (`row` gives the fields a snapshot lacks)."""
        for name in ("purchased", "allocated", "used", "expired", "end_user_remaining", "version"):
            setattr(row, name, getattr(snapshot, name))
        return cls.from_row(row)

    @strawberry.field(description="The pool's packs, newest first.")
    async def packs(self, info: Info, first: int = PACKS_FIRST) -> list[CreditPack]:
        try:
            check_page_size(first)
        except ValidationFailed as error:
            raise query_error(error) from None
        rows = await loaders_of(info).packs.load((self.pool_id, first))
        return [CreditPack.from_row(row) for row in rows]

    @strawberry.field(description=SERIES_DESCRIPTION)
    async def consumption(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        granularity: Granularity,
        feature: str | None = None,
    ) -> ConsumptionSeries:
        return await load_series(
            info, self.application_id, from_, to, granularity, pool_id=self.pool_id, feature=feature
        )


@strawberry.input
class CreateCreditPoolInput:
    application_id: strawberry.ID
    key: str
    name: str
    low_balance_threshold: int | None = None
    end_user_low_balance_threshold: int | None = None


@strawberry.type
class CreateCreditPoolPayload:
    pool: CreditPool | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class PurchaseCreditsInput:
    application_id: strawberry.ID
    pool: str
    credits: int
    expires_at: datetime | None = None
    package: str | None = None
    reference: str | None = None
    idempotency_key: str | None = None


@strawberry.type
class PurchaseCreditsPayload:
    pool: CreditPool | None = None
    pack: CreditPack | None = None
    replayed: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)
