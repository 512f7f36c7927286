"""The End User allocation report: balances with burn rates, the per-pool summary, and End
User lists filtered by status and ordered by used, remaining or projected exhaustion.

Burn rate (SPEC §2.1): the mean daily use over the last 7 days, that is the credits used
since the start of the UTC hour 7 days ago (`models.rollups.window_start`) divided by the
window's length in days (7 days and the part of the current hour gone by).
Projected exhaustion: now + remaining / burn rate; none when the burn rate is 0.

Needs allocation: the projected use of the next 7 days that the End Users' own credits do
not cover, Σ max(0, 7 · burn rate - remaining) over the pool's End Users, is more than the
pool's unallocated credits. (An End User only consumes what it was allocated, so this is
what the pool will have to allocate in the next 7 days at the current pace.)

Every function answers in one statement, whatever the number of End Users."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from models.credits import BalanceStatus
from models.errors import ValidationFailed
from models.rollups import WINDOW_USED, window_start, window_used_joins
from models.sql import single_statement

HORIZON_DAYS = 7  # needsAllocation looks this far ahead


def window_days(now: datetime) -> float:
    return (now - window_start(now)) / timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Burn:
    """An End User's use over the burn window, and what it projects."""

    window_used: int
    remaining: int
    now: datetime

    @property
    def rate_per_day(self) -> float:
        return self.window_used / window_days(self.now)

    @property
    def exhaustion_at(self) -> datetime | None:
        if self.window_used <= 0:
            return None
        return self.now + timedelta(days=self.remaining / self.rate_per_day)


@dataclass(frozen=True, slots=True)
class BalanceLine:
    """An End User's balance in one pool (zeros where it holds none) with its burn."""

    end_user_id: int
    pool_id: int
    pool_key: str
    allocated: int
    used: int
    expired: int
    remaining: int
    status: BalanceStatus
    version: int
    threshold: int | None
    burn: Burn


@dataclass(frozen=True, slots=True)
class EndUserLine:
    """An End User of a list, with its balance in the pool the list is about (if any)."""

    id: int
    application_id: int
    external_id: str
    name: str | None
    email: str | None
    created_at: datetime
    balance: BalanceLine | None
    sort_key: Any = None


_BALANCE_COLUMNS = (
    "COALESCE(b.allocated, 0) AS allocated, COALESCE(b.used, 0) AS used,"
    " COALESCE(b.expired, 0) AS expired, COALESCE(b.remaining, 0) AS remaining,"
    " COALESCE(b.status, 'EXHAUSTED') AS status, COALESCE(b.version, 0) AS version,"
    " COALESCE(b.low_balance_threshold, p.end_user_low_balance_threshold) AS threshold,"
    f" {WINDOW_USED} AS window_used, p.key AS pool_key"
)
_END_USER_COLUMNS = "e.id, e.application_id, e.external_id, e.name, e.email, e.created_at"


def _marks(first: int, count: int) -> str:
    return ",".join(f"${first + i}" for i in range(count))


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _balance(row: dict[str, Any], end_user_id: int, pool_id: int, now: datetime) -> BalanceLine:
    return BalanceLine(
        end_user_id=end_user_id,
        pool_id=pool_id,
        pool_key=row["pool_key"],
        allocated=int(row["allocated"]),
        used=int(row["used"]),
        expired=int(row["expired"]),
        remaining=int(row["remaining"]),
        status=BalanceStatus(row["status"]),
        version=int(row["version"]),
        threshold=None if row["threshold"] is None else int(row["threshold"]),
        burn=Burn(int(row["window_used"]), int(row["remaining"]), now),
    )


def _end_user(row: dict[str, Any], pool_id: int | None, now: datetime) -> EndUserLine:
    return EndUserLine(
        id=row["id"],
        application_id=row["application_id"],
        external_id=row["external_id"],
        name=row["name"],
        email=row["email"],
        created_at=_datetime(row["created_at"]),
        balance=None if pool_id is None else _balance(row, row["id"], pool_id, now),
        sort_key=row.get("k"),
    )


async def balance_lines(end_user_ids: list[int], now: datetime) -> dict[int, list[BalanceLine]]:
    """Each End User's balance in every pool of its application (pool order), with burn."""
    if not end_user_ids:
        return {}
    ids = sorted(set(end_user_ids))
    marks = _marks(2, len(ids))
    usage = window_used_joins("e.id", "p.id", f"l.end_user_id IN ({marks})", "$1")
    statement = (
        f"SELECT e.id AS end_user_id, p.id AS pool_id, {_BALANCE_COLUMNS}"
        " FROM end_user e JOIN credit_pool p ON p.application_id = e.application_id"
        " LEFT JOIN end_user_balance b ON b.end_user_id = e.id AND b.pool_id = p.id"
        f"{usage}"
        f" WHERE e.id IN ({marks}) ORDER BY e.id, p.id"
    )
    rows = await single_statement(lambda db: db.rows(statement, window_start(now), *ids))
    found: dict[int, list[BalanceLine]] = {i: [] for i in ids}
    for row in rows:
        found[row["end_user_id"]].append(_balance(row, row["end_user_id"], row["pool_id"], now))
    return found


# ------------------------------------------------------------------------------- summary


@dataclass(frozen=True, slots=True)
class AllocationSummary:
    pool_id: int
    end_users_total: int
    with_allocation: int
    with_credits: int
    low: int
    exhausted: int
    allocated: int
    used: int
    remaining: int  # what End Users hold
    unallocated: int
    window_used: int
    shortfall: float  # Σ max(0, 7·burn - remaining)
    now: datetime

    @property
    def burn_rate_per_day(self) -> float:
        return self.window_used / window_days(self.now)

    @property
    def projected_use(self) -> float:
        return HORIZON_DAYS * self.burn_rate_per_day

    @property
    def needs_allocation(self) -> bool:
        return self.shortfall > self.unallocated


def _pool_usage(pool_param: str) -> str:
    return window_used_joins("b.end_user_id", "b.pool_id", f"l.pool_id = {pool_param}", "$3")


async def allocation_summary(application_id: int, pool_id: int, now: datetime) -> AllocationSummary:
    """The pool's End User figures (SPEC §3 AllocationSummary) in one statement."""
    horizon = HORIZON_DAYS / window_days(now)  # window use → projected use of the horizon
    statement = (
        f"WITH b AS (SELECT b.allocated, b.remaining, b.status, {WINDOW_USED} AS window_used"
        f" FROM end_user_balance b{_pool_usage('$2')} WHERE b.pool_id = $2)"
        " SELECT (SELECT COUNT(*) FROM end_user WHERE application_id = $1) AS total,"
        " SUM(CASE WHEN allocated > 0 THEN 1 ELSE 0 END) AS with_allocation,"
        " SUM(CASE WHEN remaining > 0 THEN 1 ELSE 0 END) AS with_credits,"
        " SUM(CASE WHEN status = 'LOW' THEN 1 ELSE 0 END) AS low,"
        " SUM(CASE WHEN allocated > 0 AND remaining = 0 THEN 1 ELSE 0 END) AS exhausted,"
        " SUM(window_used) AS window_used,"
        " SUM(CASE WHEN window_used * $4 > remaining THEN window_used * $4 - remaining"
        " ELSE 0 END) AS shortfall,"
        " (SELECT allocated FROM credit_pool WHERE id = $2) AS pool_allocated,"
        " (SELECT used FROM credit_pool WHERE id = $2) AS pool_used,"
        " (SELECT end_user_remaining FROM credit_pool WHERE id = $2) AS held,"
        " (SELECT purchased - used - expired - end_user_remaining FROM credit_pool"
        " WHERE id = $2) AS unallocated FROM b"
    )
    row = await single_statement(
        lambda db: db.row(statement, application_id, pool_id, window_start(now), horizon)
    )
    assert row is not None

    def number(name: str) -> int:
        return int(row[name] or 0)

    return AllocationSummary(
        pool_id=pool_id,
        end_users_total=number("total"),
        with_allocation=number("with_allocation"),
        with_credits=number("with_credits"),
        low=number("low"),
        exhausted=number("exhausted"),
        allocated=number("pool_allocated"),
        used=number("pool_used"),
        remaining=number("held"),
        unallocated=number("unallocated"),
        window_used=number("window_used"),
        shortfall=float(row["shortfall"] or 0),
        now=now,
    )


class Ranking(StrEnum):
    TOP_CONSUMERS = "TOP_CONSUMERS"  # most used first
    CLOSE_TO_RUNNING_OUT = "CLOSE_TO_RUNNING_OUT"  # soonest projected exhaustion first


async def ranked_end_users(
    application_id: int, pool_id: int, ranking: Ranking, first: int, now: datetime
) -> list[EndUserLine]:
    """The first End Users of a pool by a ranking. Close to running out: those holding
    credits and using them, by projected exhaustion (remaining / window use), then id."""
    if ranking == Ranking.TOP_CONSUMERS:
        # Ranked on the balance counters first, so only these few need their window use.
        statement = (
            "WITH top AS (SELECT end_user_id FROM end_user_balance"
            " WHERE pool_id = $2 AND used > 0 ORDER BY used DESC, end_user_id LIMIT $4)"
            f" SELECT {_END_USER_COLUMNS}, {_BALANCE_COLUMNS} FROM top"
            " JOIN end_user_balance b ON b.end_user_id = top.end_user_id AND b.pool_id = $2"
            + window_used_joins(
                "b.end_user_id",
                "b.pool_id",
                "l.pool_id = $2 AND l.end_user_id IN (SELECT end_user_id FROM top)",
                "$3",
            )
            + " JOIN end_user e ON e.id = b.end_user_id"
            " JOIN credit_pool p ON p.id = b.pool_id AND p.application_id = $1"
            " ORDER BY b.used DESC, e.id"
        )
    else:
        statement = (
            f"SELECT {_END_USER_COLUMNS}, {_BALANCE_COLUMNS} FROM end_user_balance b"
            f"{_pool_usage('$2')}"
            " JOIN end_user e ON e.id = b.end_user_id"
            " JOIN credit_pool p ON p.id = b.pool_id AND p.application_id = $1"
            f" WHERE b.pool_id = $2 AND b.remaining > 0 AND {WINDOW_USED} > 0"
            f" ORDER BY CAST(b.remaining AS DOUBLE PRECISION) / {WINDOW_USED}, e.id LIMIT $4"
        )
    rows = await single_statement(
        lambda db: db.rows(statement, application_id, pool_id, window_start(now), first)
    )
    return [_end_user(row, pool_id, now) for row in rows]


# ------------------------------------------------------------------------- End User lists


class StatusFilter(StrEnum):
    OK = "OK"
    LOW = "LOW"
    EXHAUSTED = "EXHAUSTED"  # allocated some, none left
    NO_ALLOCATION = "NO_ALLOCATION"  # never allocated anything in the pool (net)


class OrderField(StrEnum):
    CREATED = "CREATED"
    USED = "USED"
    REMAINING = "REMAINING"
    PROJECTED_EXHAUSTION = "PROJECTED_EXHAUSTION"


_STATUS_SQL = {
    StatusFilter.OK: "b.status = 'OK'",
    StatusFilter.LOW: "b.status = 'LOW'",
    StatusFilter.EXHAUSTED: "(b.allocated > 0 AND b.remaining = 0)",
    StatusFilter.NO_ALLOCATION: "COALESCE(b.allocated, 0) = 0",
}
# Projected exhaustion orders by remaining / window use; End Users using nothing never run
# out and come after every other (a key larger than any ratio of two Ints).
NEVER = 1e18
_KEY_SQL = {
    OrderField.CREATED: "e.id",
    OrderField.USED: "COALESCE(b.used, 0)",
    OrderField.REMAINING: "COALESCE(b.remaining, 0)",
    OrderField.PROJECTED_EXHAUSTION: (
        f"CASE WHEN {WINDOW_USED} > 0"
        f" THEN CAST(COALESCE(b.remaining, 0) AS DOUBLE PRECISION) / {WINDOW_USED}"
        f" ELSE CAST({NEVER} AS DOUBLE PRECISION) END"
    ),
}


@dataclass(frozen=True, slots=True)
class Listing:
    """Which End Users, in which order: a status filter and an order are about one pool."""

    pool_id: int | None = None
    statuses: tuple[StatusFilter, ...] = ()
    order: OrderField = OrderField.CREATED
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    lines: list[EndUserLine]
    has_next: bool
    total: int


class _Params:
    """Numbered parameters ($1, $2, ...) added as a statement is built."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


async def end_user_page(
    application_id: int,
    listing: Listing,
    first: int,
    after: tuple[Any, int] | None,
    now: datetime,
) -> Page:
    """A page of End Users after the keyset cursor (sort key, id) of the previous page's
    last one, with the total count, in one statement. The order is total (ties broken by
    id, in the same direction), so pages never overlap or skip while the keys stay put; an
    End User whose key changes between two pages (it consumed) moves, as in any live order."""
    if listing.pool_id is None and (listing.statuses or listing.order != OrderField.CREATED):
        raise ValidationFailed("a status filter or an order by credits needs a pool", "filter")
    projected = listing.order == OrderField.PROJECTED_EXHAUSTION
    param = _Params()
    app = param(application_id)
    where = f"e.application_id = {app}"
    columns = _END_USER_COLUMNS
    balance_join = joins = ""
    if listing.pool_id is not None:
        pool = param(listing.pool_id)
        balance_join = (
            f" LEFT JOIN end_user_balance b ON b.end_user_id = e.id AND b.pool_id = {pool}"
        )
        joins = balance_join + f" JOIN credit_pool p ON p.id = {pool}"
        columns += ", " + _BALANCE_COLUMNS
        if projected:
            joins += window_used_joins(
                "e.id",
                pool,
                f"l.pool_id = {pool}",
                param(window_start(now)),
            )
        else:
            columns = columns.replace(f"{WINDOW_USED} AS window_used", "0 AS window_used")
    if listing.statuses:
        where += " AND (" + " OR ".join(_STATUS_SQL[s] for s in listing.statuses) + ")"
    keyset = ""
    if after is not None:
        cmp = "<" if listing.descending else ">"
        k, i = param(after[0]), param(after[1])
        keyset = f" WHERE x.k {cmp} {k} OR (x.k = {k} AND x.id {cmp} {i})"
    direction = "DESC" if listing.descending else "ASC"
    statement = (
        "WITH x AS NOT MATERIALIZED"
        f" (SELECT {columns}, {_KEY_SQL[listing.order]} AS k"
        f" FROM end_user e{joins} WHERE {where}),"
        f" t AS (SELECT COUNT(*) AS total FROM end_user e{balance_join} WHERE {where}),"
        f" page AS (SELECT * FROM x{keyset} ORDER BY x.k {direction}, x.id {direction}"
        f" LIMIT {param(first + 1)})"
        " SELECT t.total, page.* FROM t LEFT JOIN page ON 1 = 1"
        f" ORDER BY page.k {direction}, page.id {direction}"
    )
    rows = await single_statement(lambda db: db.rows(statement, *param.values))
    total = int(rows[0]["total"])
    rows = [row for row in rows if row["id"] is not None]
    lines = [_end_user(row, listing.pool_id, now) for row in rows[:first]]
    return Page(lines=lines, has_next=len(rows) > first, total=total)
