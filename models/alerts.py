"""Low-balance thresholds and alert acknowledgement (docs/balances.md#statuses).

Changing a threshold can change a balance's status without any credit moving: the stored
status is recomputed in the same transaction and every balance whose status changed takes
its next version, with a balance event (cause THRESHOLD) and an alert (LOW, or RECOVERED
back to OK: a threshold moves a status only between OK and LOW). Lock order as in the
ledger: End User balance rows (by End User id) before the pool row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from models.balance_report import touch_balance_report
from models.balance_rules import BalanceStatus, pool_remaining, status_for, status_sql
from models.balances import (
    END_USER_BALANCE_COLUMNS,
    NEXT_END_USER_VERSION,
    NEXT_POOL_VERSION,
    POOL_COLUMNS,
    EndUserBalanceSnapshot,
    PoolSnapshot,
    write_balance_events,
)
from models.credits import MAX_TOTAL
from models.draws import ensure_end_user_balance
from models.errors import NotFound, ValidationFailed
from models.events import BalanceCause
from models.records import Alert, AlertKind
from models.references import EndUserRef, resolve_end_user, resolve_pool
from models.sql import Sql, transaction

_NEW_STATUS = status_sql("allocated", "remaining")


def _validate(threshold: int | None) -> None:
    if threshold is not None and (isinstance(threshold, bool) or not 0 <= threshold <= MAX_TOTAL):
        raise ValidationFailed(
            f"threshold must be between 0 and {MAX_TOTAL:,}, or null to clear it",
            field="threshold",
        )


def _threshold_alert(status: BalanceStatus) -> AlertKind:
    return AlertKind.RECOVERED if status == BalanceStatus.OK else AlertKind.LOW


async def set_low_balance_threshold(
    application_id: int,
    pool_key: str,
    threshold: int | None,
    *,
    end_user: EndUserRef | None = None,
    end_user_default: bool = False,
) -> None:
    """Sets one threshold: an End User's own (`end_user`), the pool's default for its End
    Users (`end_user_default`), or the pool's own; None clears it. Every balance whose
    status it changes gets a new version, its event and its alert, in this transaction."""
    _validate(threshold)
    if end_user is not None and end_user_default:
        raise ValidationFailed("give endUser or endUserDefault, not both", field="endUser")

    async def work(db: Sql) -> None:
        pool = await resolve_pool(db, application_id, pool_key)
        if end_user is not None:
            end_user_id = await resolve_end_user(db, application_id, end_user)
            await ensure_end_user_balance(db, end_user_id, pool.id)
            scope = f"end_user_id = {end_user_id} AND pool_id = {pool.id}"
            await db.run(
                f"UPDATE end_user_balance SET low_balance_threshold = $1 WHERE {scope}", threshold
            )
        else:
            scope = f"pool_id = {pool.id} AND low_balance_threshold IS NULL"
            if end_user_default:
                # Balances following the pool default first (lock order), then the pool.
                await db.run(
                    f"SELECT end_user_id FROM end_user_balance WHERE {scope}"
                    " ORDER BY end_user_id FOR UPDATE"
                )
                await db.run(
                    "UPDATE credit_pool SET end_user_low_balance_threshold = $2 WHERE id = $1",
                    pool.id,
                    threshold,
                )
        if end_user is not None or end_user_default:
            changed = await _restatus_end_users(db, scope)
            await touch_balance_report(db, pool.id, None if end_user is None else end_user_id)
            await _write_threshold_events(db, application_id, pool.key, changed)
            return
        await _set_pool_threshold(db, application_id, pool.id, pool.key, threshold)

    await transaction(work)


async def _restatus_end_users(db: Sql, scope: str) -> list[EndUserBalanceSnapshot]:
    """Stores the status the thresholds now give the End User balances in `scope` (a
    condition on our own ids, never input); the balances it changed, at their new version."""
    rows = await db.rows(
        f"UPDATE end_user_balance SET status = {_NEW_STATUS}, {NEXT_END_USER_VERSION}"
        f" WHERE {scope} AND status <> {_NEW_STATUS} RETURNING {END_USER_BALANCE_COLUMNS}"
    )
    return [EndUserBalanceSnapshot.from_row(row) for row in rows]


async def _set_pool_threshold(
    db: Sql, application_id: int, pool_id: int, pool_key: str, threshold: int | None
) -> None:
    row = await db.row(
        "SELECT purchased, used, expired, low_balance_threshold FROM credit_pool"
        " WHERE id = $1 FOR UPDATE",
        pool_id,
    )
    assert row is not None
    remaining = pool_remaining(row["purchased"], row["used"], row["expired"])
    moved = status_for(remaining, row["low_balance_threshold"]) != status_for(remaining, threshold)
    next_version = f", {NEXT_POOL_VERSION}" if moved else ""
    updated = await db.row(
        f"UPDATE credit_pool SET low_balance_threshold = $2{next_version} WHERE id = $1"
        f" RETURNING {POOL_COLUMNS}",
        pool_id,
        threshold,
    )
    assert updated is not None
    if moved:
        await _write_threshold_events(
            db, application_id, pool_key, [PoolSnapshot.from_row(updated)]
        )


async def _write_threshold_events(
    db: Sql,
    application_id: int,
    pool_key: str,
    changed: Sequence[EndUserBalanceSnapshot | PoolSnapshot],
) -> None:
    """A THRESHOLD event and an alert per balance whose status the change moved."""
    await write_balance_events(
        db,
        application_id,
        pool_key,
        BalanceCause.THRESHOLD,
        [(balance, 0) for balance in changed],
        alerts=[(balance, _threshold_alert(balance.status)) for balance in changed],
    )


async def acknowledge_alert(application_id: int, alert_id: int) -> Alert:
    alert = await Alert.get_or_none(id=alert_id, application_id=application_id)
    if alert is None:
        raise NotFound("alert not found", field="id")
    if alert.acknowledged_at is None:
        alert.acknowledged_at = datetime.now(UTC)
        await alert.save(update_fields=["acknowledged_at"])
    return alert
