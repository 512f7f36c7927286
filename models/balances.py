"""Balance snapshots, the status rule of SPEC §4, and the events that announce them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from models.credits import BalanceStatus
from models.records import LedgerEntryKind
from models.sql import Sql, dumps, values_list

# The End User threshold is the balance's own override, else its pool's default.
_THRESHOLD = (
    "COALESCE(low_balance_threshold,"
    " (SELECT end_user_low_balance_threshold FROM credit_pool WHERE credit_pool.id = pool_id))"
)


def end_user_status_sql(new_remaining: str) -> str:
    """SQL for the status an UPDATE of end_user_balance leaves, given the new remaining."""
    return (
        f"CASE WHEN {new_remaining} <= 0 THEN 'EXHAUSTED'"
        f" WHEN {new_remaining} <= COALESCE({_THRESHOLD}, -1) THEN 'LOW' ELSE 'OK' END"
    )


END_USER_BALANCE_COLUMNS = (
    "end_user_id, pool_id, allocated, used, expired, remaining, status, version"
)
POOL_COLUMNS = (
    "id AS pool_id, purchased, allocated, used, expired, end_user_remaining,"
    " low_balance_threshold, version"
)


def status_for(remaining: int, threshold: int | None) -> BalanceStatus:
    if remaining <= 0:
        return BalanceStatus.EXHAUSTED
    if threshold is not None and remaining <= threshold:
        return BalanceStatus.LOW
    return BalanceStatus.OK


@dataclass(frozen=True, slots=True)
class EndUserBalanceSnapshot:
    end_user_id: int
    pool_id: int
    allocated: int
    used: int
    expired: int
    remaining: int
    status: BalanceStatus
    version: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EndUserBalanceSnapshot:
        return cls(
            end_user_id=row["end_user_id"],
            pool_id=row["pool_id"],
            allocated=row["allocated"],
            used=row["used"],
            expired=row["expired"],
            remaining=row["remaining"],
            status=BalanceStatus(row["status"]),
            version=row["version"],
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EndUserBalanceSnapshot:
        return cls(**{**data, "status": BalanceStatus(data["status"])})


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    pool_id: int
    purchased: int
    allocated: int
    used: int
    expired: int
    end_user_remaining: int
    version: int
    low_balance_threshold: int | None

    @property
    def remaining(self) -> int:
        return self.purchased - self.used - self.expired

    @property
    def unallocated(self) -> int:
        return self.remaining - self.end_user_remaining

    @property
    def status(self) -> BalanceStatus:
        return status_for(self.remaining, self.low_balance_threshold)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PoolSnapshot:
        return cls(**{name: row[name] for name in cls.__slots__})


def _event(
    application_id: int,
    pool_key: str,
    cause: LedgerEntryKind,
    at: str,
    snapshot: EndUserBalanceSnapshot | PoolSnapshot,
) -> dict[str, Any]:
    return {
        "application_id": application_id,
        "pool_id": snapshot.pool_id,
        "pool": pool_key,
        "end_user_id": getattr(snapshot, "end_user_id", None),
        "version": snapshot.version,
        "cause": cause.value,
        "at": at,
        "allocated": snapshot.allocated,
        "used": snapshot.used,
        "remaining": snapshot.remaining,
        "expired": snapshot.expired,
        "status": snapshot.status.value,
    }


async def write_balance_events(
    db: Sql,
    application_id: int,
    pool_key: str,
    cause: LedgerEntryKind,
    snapshots: list[EndUserBalanceSnapshot | PoolSnapshot],
) -> None:
    """Writes one outbox row per changed balance, in the transaction that changed it
    (SPEC rule 6: published after commit, never for a rolled-back change)."""
    if not snapshots:
        return
    db.wrote_outbox = True
    at = datetime.now(UTC).isoformat()
    args: list[Any] = []
    for snapshot in snapshots:
        payload = _event(application_id, pool_key, cause, at, snapshot)
        args += [application_id, "balance", dumps(payload)]
    await db.run(
        "INSERT INTO outbox_event (application_id, topic, payload, created_at) VALUES "
        + values_list(len(snapshots), 3, ", now()"),
        *args,
    )
