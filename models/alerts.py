"""Low-balance thresholds and alert acknowledgement (SPEC §4).

Changing a threshold can change a balance's status without any credit moving: the stored
status is recomputed in the same transaction and, where it changed, an alert is written.
Lock order as in the ledger: End User balance rows (by End User id) before the pool row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from models import clock
from models.balance_report import touch_balance_report
from models.balances import EndUserBalanceSnapshot, PoolSnapshot, status_for, write_alert
from models.credits import MAX_TOTAL, BalanceStatus
from models.draws import ensure_end_user_balance
from models.errors import NotFound, ValidationFailed
from models.records import Alert, AlertKind
from models.references import EndUserRef, resolve_end_user, resolve_pool
from models.sql import Sql, transaction


def _kind(before: str, after: str) -> AlertKind | None:
    if before == after:
        return None
    return AlertKind.RECOVERED if after == BalanceStatus.OK else AlertKind(after)


def _validate(threshold: int | None) -> None:
    if threshold is not None and (isinstance(threshold, bool) or not 0 <= threshold <= MAX_TOTAL):
        raise ValidationFailed(
            f"threshold must be between 0 and {MAX_TOTAL:,}, or null to clear it",
            field="threshold",
        )


async def set_low_balance_threshold(
    application_id: int,
    pool_key: str,
    threshold: int | None,
    *,
    end_user: EndUserRef | None = None,
    end_user_default: bool = False,
) -> None:
    """Sets one threshold: an End User's own (`end_user`), the pool's default for its End
    Users (`end_user_default`), or the pool's own; None clears it."""
    _validate(threshold)
    if end_user is not None and end_user_default:
        raise ValidationFailed("give endUser or endUserDefault, not both", field="endUser")

    async def work(db: Sql) -> None:
        pool = await resolve_pool(db, application_id, pool_key)
        at = clock.now().isoformat()
        if end_user is not None:
            end_user_id = await resolve_end_user(db, application_id, end_user)
            await ensure_end_user_balance(db, end_user_id, pool.id)
            rows = await db.rows(
                "SELECT end_user_id, status, version FROM end_user_balance"
                " WHERE end_user_id = $1 AND pool_id = $2 FOR UPDATE",
                end_user_id,
                pool.id,
            )
            before = {row["end_user_id"]: row for row in rows}
            effective = (
                "COALESCE($3, (SELECT end_user_low_balance_threshold FROM credit_pool"
                " WHERE credit_pool.id = pool_id))"
            )
            after = await db.rows(
                "UPDATE end_user_balance SET low_balance_threshold = $3, status ="
                " CASE WHEN remaining <= 0 THEN 'EXHAUSTED'"
                f" WHEN remaining <= COALESCE({effective}, -1) THEN 'LOW' ELSE 'OK' END"
                " WHERE end_user_id = $1 AND pool_id = $2"
                f" RETURNING end_user_id, remaining, status, {effective} AS threshold",
                end_user_id,
                pool.id,
                threshold,
            )
            await touch_balance_report(db, pool.id, end_user_id)
            await _alerts_for(db, application_id, pool.key, pool.id, at, before, after)
            return
        if end_user_default:
            # Balances without their own threshold follow the pool default: lock them first.
            rows = await db.rows(
                "SELECT end_user_id, status, version FROM end_user_balance"
                " WHERE pool_id = $1 AND low_balance_threshold IS NULL"
                " ORDER BY end_user_id FOR UPDATE",
                pool.id,
            )
            before = {row["end_user_id"]: row for row in rows}
            new_status = (
                "CASE WHEN remaining <= 0 THEN 'EXHAUSTED'"
                " WHEN remaining <= COALESCE($2, -1) THEN 'LOW' ELSE 'OK' END"
            )
            after = await db.rows(
                f"UPDATE end_user_balance SET status = {new_status}"
                f" WHERE pool_id = $1 AND low_balance_threshold IS NULL AND status <> {new_status}"
                " RETURNING end_user_id, remaining, status, $2 AS threshold",
                pool.id,
                threshold,
            )
            await db.run(
                "UPDATE credit_pool SET end_user_low_balance_threshold = $2 WHERE id = $1",
                pool.id,
                threshold,
            )
            await touch_balance_report(db, pool.id, None)
            await _alerts_for(db, application_id, pool.key, pool.id, at, before, after)
            return
        row = await db.row(
            "SELECT purchased, used, expired, low_balance_threshold, version FROM credit_pool"
            " WHERE id = $1 FOR UPDATE",
            pool.id,
        )
        assert row is not None
        await db.run(
            "UPDATE credit_pool SET low_balance_threshold = $2 WHERE id = $1", pool.id, threshold
        )
        remaining = row["purchased"] - row["used"] - row["expired"]
        kind = _kind(
            status_for(remaining, row["low_balance_threshold"]),
            status_for(remaining, threshold),
        )
        if kind is not None and row["version"] > 0:
            snapshot = PoolSnapshot(
                pool_id=pool.id,
                purchased=row["purchased"],
                allocated=0,
                used=row["used"],
                expired=row["expired"],
                end_user_remaining=0,
                version=row["version"],
                low_balance_threshold=threshold,
            )
            await write_alert(db, application_id, pool.key, at, snapshot, kind)
            db.wrote_outbox = True

    await transaction(work)


async def _alerts_for(
    db: Sql,
    application_id: int,
    pool_key: str,
    pool_id: int,
    at: str,
    before: dict[int, dict[str, Any]],
    after: list[dict[str, Any]],
) -> None:
    for row in after:
        old = before.get(row["end_user_id"])
        if old is None or old["version"] == 0:  # never funded: nothing to alert about
            continue
        kind = _kind(old["status"], row["status"])
        if kind is None:
            continue
        snapshot = EndUserBalanceSnapshot(
            end_user_id=row["end_user_id"],
            pool_id=pool_id,
            allocated=0,
            used=0,
            expired=0,
            remaining=row["remaining"],
            status=BalanceStatus(row["status"]),
            version=old["version"],
            threshold=row["threshold"],
        )
        await write_alert(db, application_id, pool_key, at, snapshot, kind)
        db.wrote_outbox = True


async def acknowledge_alert(application_id: int, alert_id: int) -> Alert:
    alert = await Alert.get_or_none(id=alert_id, application_id=application_id)
    if alert is None:
        raise NotFound("alert not found", field="id")
    if alert.acknowledged_at is None:
        alert.acknowledged_at = datetime.now(UTC)
        await alert.save(update_fields=["acknowledged_at"])
    return alert
