"""Current balances as events: the first message of a subscription, and a resync."""

from __future__ import annotations

from models.balance_rules import BalanceStatus
from models.balances import PoolSnapshot, balance_changed, iso_time
from models.events import BalanceCause, BalanceChanged
from models.sql import Sql, transaction
from subscriptions.fanout import Topic


async def _last_cause(db: Sql, pool_id: int, end_user_id: int | None) -> BalanceCause:
    if end_user_id is None:
        kind = await db.value(
            "SELECT kind FROM ledger_entry WHERE pool_id = $1 ORDER BY id DESC LIMIT 1", pool_id
        )
        return BalanceCause(kind or "PURCHASE")
    kind = await db.value(
        "SELECT kind FROM ledger_entry WHERE end_user_id = $1 AND pool_id = $2"
        " ORDER BY id DESC LIMIT 1",
        end_user_id,
        pool_id,
    )
    return BalanceCause(kind or "ALLOCATE")


async def pool_snapshots(application_id: int, pool_key: str | None) -> list[BalanceChanged]:
    """The application's pool balances (of `pool_key` only, when given) at their current
    versions; `at` is the version's own (a pool never changed has its creation time)."""

    async def read(db: Sql) -> list[BalanceChanged]:
        pools = await db.rows(
            "SELECT key, id AS pool_id, purchased, allocated, used, expired, end_user_remaining,"
            " low_balance_threshold, version, COALESCE(changed_at, created_at) AS at"
            " FROM credit_pool WHERE application_id = $1 ORDER BY id",
            application_id,
        )
        events = []
        for pool in pools:
            if pool_key is not None and pool["key"] != pool_key:
                continue
            cause = await _last_cause(db, pool["pool_id"], None)
            snapshot = PoolSnapshot.from_row(pool)
            events.append(balance_changed(application_id, pool["key"], cause, snapshot))
        return events

    return await transaction(read)


async def end_user_snapshots(
    application_id: int, end_user_id: int, pool_key: str | None
) -> list[BalanceChanged]:
    """An End User's balance in every pool of the application (of `pool_key` only, when
    given), zero and NO_ALLOCATION where it never held credits."""

    async def read(db: Sql) -> list[BalanceChanged]:
        rows = await db.rows(
            "SELECT p.id, p.key, b.allocated, b.used, b.expired, b.remaining, b.status, b.version,"
            " COALESCE(b.updated_at, p.created_at) AS at"
            " FROM credit_pool p LEFT JOIN end_user_balance b"
            " ON b.pool_id = p.id AND b.end_user_id = $2"
            " WHERE p.application_id = $1 ORDER BY p.id",
            application_id,
            end_user_id,
        )
        events = []
        for row in rows:
            if pool_key is not None and row["key"] != pool_key:
                continue
            events.append(
                BalanceChanged(
                    application_id=application_id,
                    pool_id=row["id"],
                    pool=row["key"],
                    end_user_id=end_user_id,
                    version=row["version"] or 0,
                    cause=await _last_cause(db, row["id"], end_user_id),
                    at=iso_time(row["at"]),
                    allocated=row["allocated"] or 0,
                    used=row["used"] or 0,
                    remaining=row["remaining"] or 0,
                    expired=row["expired"] or 0,
                    status=BalanceStatus(row["status"] or BalanceStatus.NO_ALLOCATION),
                )
            )
        return events

    return await transaction(read)


async def topic_snapshots(topic: Topic) -> list[BalanceChanged]:
    """What a new subscriber of `topic` receives first: its balances as they are now."""
    if topic.kind != "balance":
        return []
    if topic.end_user_id is None:
        return await pool_snapshots(topic.application_id, topic.pool)
    return await end_user_snapshots(topic.application_id, topic.end_user_id, topic.pool)
