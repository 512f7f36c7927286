"""Balance snapshots, the status rule of docs/balances.md#statuses, and the events that announce
them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from models import outbox
from models.balance_rules import (
    END_USER_THRESHOLD_SQL,
    BalanceStatus,
    PoolFigures,
    end_user_status,
    status_for,
)
from models.events import AlertRaised, BalanceCause, BalanceChanged
from models.records import AlertKind, LedgerEntryKind
from models.sql import Sql, values_list

END_USER_BALANCE_COLUMNS = (
    "end_user_id, pool_id, allocated, used, expired, remaining, status, version,"
    f" updated_at AS at, {END_USER_THRESHOLD_SQL} AS threshold"
)
POOL_COLUMNS = (
    "id AS pool_id, purchased, allocated, used, expired, end_user_remaining,"
    " low_balance_threshold, version, changed_at AS at"
)
# Every change of a balance's visible fields takes the next version and stamps its time,
# which its event and any later snapshot of that version carry as `at`.
NEXT_END_USER_VERSION = "version = version + 1, updated_at = now()"
NEXT_POOL_VERSION = "version = version + 1, changed_at = now()"


def iso_time(value: datetime | str | None) -> str:
    """A stored timestamp as an event's `at` (ISO 8601, UTC); SQLite keeps text."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).isoformat()


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
    at: str = ""  # when this version was made (ISO 8601)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EndUserBalanceSnapshot:
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
            at=iso_time(row.get("at")),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EndUserBalanceSnapshot:
        return cls(**{**data, "status": BalanceStatus(data["status"])})


@dataclass(frozen=True, slots=True)
class PoolSnapshot(PoolFigures):
    pool_id: int
    purchased: int
    allocated: int
    used: int
    expired: int
    end_user_remaining: int
    version: int
    low_balance_threshold: int | None
    at: str = ""  # when this version was made (ISO 8601)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PoolSnapshot:
        counters = {name: row[name] for name in cls.__slots__ if name != "at"}
        return cls(**counters, at=iso_time(row["at"]))


def balance_changed(
    application_id: int,
    pool_key: str,
    cause: BalanceCause,
    snapshot: EndUserBalanceSnapshot | PoolSnapshot,
) -> BalanceChanged:
    """A balance at its snapshot's version, as its event."""
    return BalanceChanged(
        application_id=application_id,
        pool_id=snapshot.pool_id,
        pool=pool_key,
        end_user_id=getattr(snapshot, "end_user_id", None),
        version=snapshot.version,
        cause=cause,
        at=snapshot.at,
        allocated=snapshot.allocated,
        used=snapshot.used,
        remaining=snapshot.remaining,
        expired=snapshot.expired,
        status=snapshot.status,
    )


# A changed balance and how much its remaining moved (+ credit, - debit, 0 neither).
BalanceChange = tuple[EndUserBalanceSnapshot | PoolSnapshot, int]


def _threshold_of(snapshot: EndUserBalanceSnapshot | PoolSnapshot) -> int | None:
    if isinstance(snapshot, PoolSnapshot):
        return snapshot.low_balance_threshold
    return snapshot.threshold


def _status_before(change: BalanceChange) -> BalanceStatus:
    snapshot, delta = change
    remaining = snapshot.remaining - delta
    if isinstance(snapshot, PoolSnapshot):
        return status_for(remaining, snapshot.low_balance_threshold)
    # only an allocation raises an End User's remaining, and its allocated as much
    return end_user_status(snapshot.allocated - max(delta, 0), remaining, snapshot.threshold)


def alert_kind(change: BalanceChange) -> AlertKind | None:
    """The alert a change writes (docs/balances.md#statuses): only on a status change, and never
    for a balance's first change (its first funding is not a recovery) nor into or out of
    NO_ALLOCATION (being allocated credits, or giving them all back, is no alert)."""
    snapshot, delta = change
    if snapshot.version <= 1 or delta == 0:
        return None
    before = _status_before(change)
    after = snapshot.status
    if before == after or BalanceStatus.NO_ALLOCATION in (before, after):
        return None
    if after == BalanceStatus.OK:
        return AlertKind.RECOVERED
    return AlertKind(after.value)


# A balance at the version that moved its status, and the alert that move writes.
Alerted = tuple[EndUserBalanceSnapshot | PoolSnapshot, AlertKind]


async def write_balance_events(
    db: Sql,
    application_id: int,
    pool_key: str,
    cause: LedgerEntryKind | BalanceCause,
    changes: list[BalanceChange],
    alerts: list[Alerted] | None = None,
) -> None:
    """Writes one outbox row per changed balance, and an alert (with its own outbox row)
    per status change, in the transaction that changed them (docs/ledger.md rule 6: published after
    commit, never for a rolled-back change). The alerts are those `alert_kind` finds in
    the credit movements, unless given."""
    if not changes:
        return
    reason = BalanceCause(cause.value)
    events = [
        balance_changed(application_id, pool_key, reason, snapshot) for snapshot, _ in changes
    ]
    await outbox.write_events(db, application_id, events)
    if alerts is None:
        alerts = []
        for change in changes:
            kind = alert_kind(change)
            if kind is not None:
                alerts.append((change[0], kind))
    await write_alerts(db, application_id, pool_key, alerts)


async def write_alerts(db: Sql, application_id: int, pool_key: str, alerts: list[Alerted]) -> None:
    """Writes the alerts and their outbox rows, a bounded number per statement."""
    step = outbox.ROWS_PER_STATEMENT  # the alerts' own rows, as many per statement
    for first in range(0, len(alerts), step):
        chunk = alerts[first : first + step]
        args: list[Any] = []
        for snapshot, kind in chunk:
            end_user_id = getattr(snapshot, "end_user_id", None)
            args += [application_id, snapshot.pool_id, end_user_id, kind.value]
            args += [snapshot.remaining, _threshold_of(snapshot)]
        rows = await db.rows(
            "INSERT INTO alert (application_id, pool_id, end_user_id, kind, remaining, threshold,"
            " created_at) VALUES " + values_list(len(chunk), 6, ", now()") + " RETURNING id",
            *args,
        )
        # both databases assign the ids in VALUES order
        ids = sorted(row["id"] for row in rows)
        raised = [
            AlertRaised(
                id=alert_id,
                application_id=application_id,
                pool_id=snapshot.pool_id,
                pool=pool_key,
                end_user_id=getattr(snapshot, "end_user_id", None),
                kind=kind,
                remaining=snapshot.remaining,
                threshold=_threshold_of(snapshot),
                at=snapshot.at,
            )
            for alert_id, (snapshot, kind) in zip(ids, chunk, strict=True)
        ]
        await outbox.write_events(db, application_id, raised)
