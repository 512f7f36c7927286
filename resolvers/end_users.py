"""End Users, their balances, and the End User connection."""

from __future__ import annotations

import base64
from datetime import datetime

import strawberry

from models.balances import EndUserBalanceSnapshot
from models.credits import CreditPool as PoolRow
from models.credits import EndUser as EndUserRow
from models.credits import EndUserBalance as BalanceRow
from models.errors import ValidationFailed
from models.references import EndUserRef as DomainEndUserRef
from resolvers.errors import UserError, parse_id
from resolvers.pools import BalanceStatus, check_page_size


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


_UNKNOWN = object()


@strawberry.type
class EndUserBalance:
    pool: str
    allocated: int
    used: int
    remaining: int
    expired: int
    status: BalanceStatus
    version: int
    end_user_id: strawberry.Private[int]
    pool_id: strawberry.Private[int]
    known_threshold: strawberry.Private[object] = _UNKNOWN

    @strawberry.field(description="The End User's own threshold, else the pool's default.")
    async def low_balance_threshold(self) -> int | None:
        if self.known_threshold is _UNKNOWN:  # a write's result: read it only when asked
            own = await BalanceRow.filter(end_user_id=self.end_user_id, pool_id=self.pool_id)
            pool = await PoolRow.get(id=self.pool_id)
            override = own[0].low_balance_threshold if own else None
            self.known_threshold = (
                override if override is not None else pool.end_user_low_balance_threshold
            )
        return self.known_threshold  # type: ignore[return-value]

    @classmethod
    def from_snapshot(cls, pool_key: str, snapshot: EndUserBalanceSnapshot) -> EndUserBalance:
        return cls(
            pool=pool_key,
            allocated=snapshot.allocated,
            used=snapshot.used,
            remaining=snapshot.remaining,
            expired=snapshot.expired,
            status=snapshot.status,
            version=snapshot.version,
            end_user_id=snapshot.end_user_id,
            pool_id=snapshot.pool_id,
        )


async def balances_of(end_user_id: int, application_id: int) -> list[EndUserBalance]:
    """The End User's balance in every pool of the application (zero where none)."""
    pools = await PoolRow.filter(application_id=application_id).order_by("id")
    rows = {row.pool_id: row for row in await BalanceRow.filter(end_user_id=end_user_id)}  # type: ignore[attr-defined]
    result = []
    for pool in pools:
        row = rows.get(pool.id)
        default = pool.end_user_low_balance_threshold
        result.append(
            EndUserBalance(
                pool=pool.key,
                allocated=row.allocated if row else 0,
                used=row.used if row else 0,
                remaining=row.remaining if row else 0,
                expired=row.expired if row else 0,
                status=BalanceStatus(row.status) if row else BalanceStatus.EXHAUSTED,
                version=row.version if row else 0,
                end_user_id=end_user_id,
                pool_id=pool.id,
                known_threshold=(
                    row.low_balance_threshold
                    if row and row.low_balance_threshold is not None
                    else default
                ),
            )
        )
    return result


@strawberry.type
class EndUser:
    id: strawberry.ID
    external_id: str
    name: str | None
    email: str | None
    created_at: datetime
    row_id: strawberry.Private[int]
    application_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: EndUserRow) -> EndUser:
        return cls(
            id=strawberry.ID(str(row.id)),
            external_id=row.external_id,
            name=row.name,
            email=row.email,
            created_at=row.created_at,
            row_id=row.id,
            application_id=row.application_id,  # type: ignore[attr-defined]
        )

    @strawberry.field
    async def balances(self) -> list[EndUserBalance]:
        return await balances_of(self.row_id, self.application_id)

    @strawberry.field
    async def balance(self, pool: str) -> EndUserBalance | None:
        for balance in await balances_of(self.row_id, self.application_id):
            if balance.pool == pool:
                return balance
        return None


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


def encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"EndUser:{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        kind, _, raw = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind == "EndUser" and raw.isdigit():
            return int(raw)
    except (ValueError, UnicodeDecodeError):
        pass
    raise ValidationFailed("after is not a cursor of this connection", field="after")


async def end_user_page(application_id: int, first: int, after: str | None) -> EndUserConnection:
    check_page_size(first)
    query = EndUserRow.filter(application_id=application_id)
    total = await query.count()
    if after is not None:
        query = query.filter(id__gt=decode_cursor(after))
    rows = await query.order_by("id").limit(first + 1)
    page = [EndUserEdge(cursor=encode_cursor(r.id), node=EndUser.from_row(r)) for r in rows[:first]]
    return EndUserConnection(
        edges=page,
        page_info=PageInfo(
            has_next_page=len(rows) > first, end_cursor=page[-1].cursor if page else None
        ),
        total_count=total,
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
