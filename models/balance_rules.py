"""The arithmetic of balances, in one place (docs/balances.md): a pool's remaining and
unallocated credits and every balance's status, in Python and, for the statements that keep
the counters, in SQL. Everything else derives its figures from these."""

from __future__ import annotations

from enum import StrEnum


class BalanceStatus(StrEnum):
    OK = "OK"
    LOW = "LOW"
    EXHAUSTED = "EXHAUSTED"  # was allocated credits, none left
    NO_ALLOCATION = "NO_ALLOCATION"  # an End User never allocated any in the pool (net)


def pool_remaining(purchased: int, used: int, expired: int) -> int:
    """A pool's credits neither used nor expired, allocated or not."""
    return purchased - used - expired


def pool_unallocated(purchased: int, used: int, expired: int, end_user_remaining: int) -> int:
    """A pool's remaining credits that no End User holds."""
    return pool_remaining(purchased, used, expired) - end_user_remaining


class PoolFigures:
    """A pool's derived figures, for whatever holds its counters (a row, a snapshot)."""

    __slots__ = ()
    purchased: int
    used: int
    expired: int
    end_user_remaining: int
    low_balance_threshold: int | None

    @property
    def remaining(self) -> int:
        return pool_remaining(self.purchased, self.used, self.expired)

    @property
    def unallocated(self) -> int:
        return pool_unallocated(self.purchased, self.used, self.expired, self.end_user_remaining)

    @property
    def status(self) -> BalanceStatus:
        return status_for(self.remaining, self.low_balance_threshold)


def pool_remaining_sql(table: str = "") -> str:
    """`pool_remaining` over credit_pool's columns (`table`: an alias, with its dot)."""
    return f"{table}purchased - {table}used - {table}expired"


def status_for(remaining: int, threshold: int | None) -> BalanceStatus:
    """A pool's status, and an End User's once it was allocated credits
    (docs/balances.md#statuses)."""
    if remaining <= 0:
        return BalanceStatus.EXHAUSTED
    if threshold is not None and remaining <= threshold:
        return BalanceStatus.LOW
    return BalanceStatus.OK


def end_user_status(allocated: int, remaining: int, threshold: int | None) -> BalanceStatus:
    """An End User's status in a pool: NO_ALLOCATION while it holds no allocation (net of
    releases), else as a pool's (`status_for`). `status_sql` is the same rule in SQL."""
    if allocated <= 0:
        return BalanceStatus.NO_ALLOCATION
    return status_for(remaining, threshold)


# The End User threshold is the balance's own override, else its pool's default.
END_USER_THRESHOLD_SQL = (
    "COALESCE(low_balance_threshold,"
    " (SELECT end_user_low_balance_threshold FROM credit_pool WHERE credit_pool.id = pool_id))"
)


def status_sql(allocated: str, remaining: str, threshold: str = END_USER_THRESHOLD_SQL) -> str:
    """`end_user_status` in SQL, over SQL expressions: in an UPDATE of end_user_balance, the
    new allocated and remaining, and the threshold."""
    return (
        f"CASE WHEN {allocated} <= 0 THEN 'NO_ALLOCATION' WHEN {remaining} <= 0 THEN 'EXHAUSTED'"
        f" WHEN {remaining} <= COALESCE({threshold}, -1) THEN 'LOW' ELSE 'OK' END"
    )
