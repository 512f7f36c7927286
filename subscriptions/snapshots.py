"""Current balances as events: the first message of a subscription, and a resync."""

from __future__ import annotations

from typing import Any

from models.balances import iso_time, status_for
from models.credits import BalanceStatus
from models.sql import Sql, transaction
from subscriptions.fanout import Topic
from subscriptions.streams import Event


async def _last_cause(db: Sql, pool_id: int, end_user_id: int | None) -> str:
    if end_user_id is None:
        kind = await db.value(
            "SELECT kind FROM ledger_entry WHERE pool_id = $1 ORDER BY id DESC LIMIT 1", pool_id
        )
        return kind or "PURCHASE"
    kind = await db.value(
        "SELECT kind FROM ledger_entry WHERE end_user_id = $1 AND pool_id = $2"
        " ORDER BY id DESC LIMIT 1",
        end_user_id,
        pool_id,
    )
    return kind or "ALLOCATE"


def _event(
    application_id: int, pool: dict[str, Any], end_user_id: int | None, **counters: Any
) -> Event:
    """A balance's current version as an event; `at` is the version's own (stored when it
    was made; a balance never changed has the pool's creation time)."""
    return {
        "application_id": application_id,
        "pool_id": pool["id"],
        "pool": pool["key"],
        "end_user_id": end_user_id,
        "at": iso_time(pool["at"]),
        **counters,
    }


async def pool_snapshots(application_id: int, pool_key: str | None) -> list[Event]:
    async def read(db: Sql) -> list[Event]:
        pools = await db.rows(
            "SELECT id, key, purchased, allocated, used, expired, low_balance_threshold, version,"
            " COALESCE(changed_at, created_at) AS at FROM credit_pool WHERE application_id = $1"
            " ORDER BY id",
            application_id,
        )
        events = []
        for pool in pools:
            if pool_key is not None and pool["key"] != pool_key:
                continue
            remaining = pool["purchased"] - pool["used"] - pool["expired"]
            events.append(
                _event(
                    application_id,
                    pool,
                    None,
                    version=pool["version"],
                    cause=await _last_cause(db, pool["id"], None),
                    allocated=pool["allocated"],
                    used=pool["used"],
                    remaining=remaining,
                    expired=pool["expired"],
                    status=status_for(remaining, pool["low_balance_threshold"]).value,
                )
            )
        return events

    return await transaction(read)


async def end_user_snapshots(
    application_id: int, end_user_id: int, pool_key: str | None
) -> list[Event]:
    async def read(db: Sql) -> list[Event]:
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
                _event(
                    application_id,
                    row,
                    end_user_id,
                    version=row["version"] or 0,
                    cause=await _last_cause(db, row["id"], end_user_id),
                    allocated=row["allocated"] or 0,
                    used=row["used"] or 0,
                    remaining=row["remaining"] or 0,
                    expired=row["expired"] or 0,
                    status=row["status"] or BalanceStatus.NO_ALLOCATION.value,
                )
            )
        return events

    return await transaction(read)


async def topic_snapshots(topic: Topic) -> list[Event]:
    """What a new subscriber of `topic` receives first: its balances as they are now."""
    if topic.kind != "balance":
        return []
    if topic.end_user_id is None:
        return await pool_snapshots(topic.application_id, topic.pool)
    return await end_user_snapshots(topic.application_id, topic.end_user_id, topic.pool)
