"""Balance snapshots, the status rule of SPEC §4, and the events that announce them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models import clock
from models.credits import BalanceStatus
from models.records import AlertKind, LedgerEntryKind
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
    "end_user_id, pool_id, allocated, used, expired, remaining, status, version, "
    + _THRESHOLD
    + " AS threshold"
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
    threshold: int | None = None  # the effective one: the End User's, else the pool default

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
            threshold=row.get("threshold"),
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


# A changed balance and how much its remaining moved (+ credit, - debit, 0 neither).
BalanceChange = tuple[EndUserBalanceSnapshot | PoolSnapshot, int]


def _threshold_of(snapshot: EndUserBalanceSnapshot | PoolSnapshot) -> int | None:
    if isinstance(snapshot, PoolSnapshot):
        return snapshot.low_balance_threshold
    return snapshot.threshold


def alert_kind(change: BalanceChange) -> AlertKind | None:
    """The alert a change writes (SPEC §4): only on a status change, and never for a
    balance's first change (its first funding is not a recovery)."""
    snapshot, delta = change
    if snapshot.version <= 1 or delta == 0:
        return None
    threshold = _threshold_of(snapshot)
    before = status_for(snapshot.remaining - delta, threshold)
    after = status_for(snapshot.remaining, threshold)
    if before == after:
        return None
    if after == BalanceStatus.OK:
        return AlertKind.RECOVERED
    return AlertKind(after.value)


async def write_balance_events(
    db: Sql,
    application_id: int,
    pool_key: str,
    cause: LedgerEntryKind,
    changes: list[BalanceChange],
) -> None:
    """Writes one outbox row per changed balance, and an alert (with its own outbox row)
    per status change, in the transaction that changed them (SPEC rule 6: published after
    commit, never for a rolled-back change)."""
    if not changes:
        return
    db.wrote_outbox = True
    at = clock.now().isoformat()
    args: list[Any] = []
    for snapshot, _ in changes:
        payload = _event(application_id, pool_key, cause, at, snapshot)
        args += [application_id, "balance", dumps(payload)]
    await db.run(
        "INSERT INTO outbox_event (application_id, topic, payload, created_at) VALUES "
        + values_list(len(changes), 3, ", now()"),
        *args,
    )
    for change in changes:
        kind = alert_kind(change)
        if kind is not None:
            await write_alert(db, application_id, pool_key, at, change[0], kind)


async def write_alert(
    db: Sql,
    application_id: int,
    pool_key: str,
    at: str,
    snapshot: EndUserBalanceSnapshot | PoolSnapshot,
    kind: AlertKind,
) -> None:
    end_user_id = getattr(snapshot, "end_user_id", None)
    threshold = _threshold_of(snapshot)
    alert_id = await db.value(
        "INSERT INTO alert (application_id, pool_id, end_user_id, kind, remaining, threshold,"
        " created_at) VALUES ($1, $2, $3, $4, $5, $6, now()) RETURNING id",
        application_id,
        snapshot.pool_id,
        end_user_id,
        kind.value,
        snapshot.remaining,
        threshold,
    )
    payload = {
        "id": alert_id,
        "application_id": application_id,
        "pool_id": snapshot.pool_id,
        "pool": pool_key,
        "end_user_id": end_user_id,
        "kind": kind.value,
        "remaining": snapshot.remaining,
        "threshold": threshold,
        "at": at,
        # alerts are not conflated per balance; the stream keys them by their own id
        "version": alert_id,
    }
    await db.run(
        "INSERT INTO outbox_event (application_id, topic, payload, created_at)"
        " VALUES ($1, 'alert', $2, now())",
        application_id,
        dumps(payload),
    )
