"""Many consumptions in one transaction, each with its own result (`consumeCreditsBatch`).

Each item keeps every rule of a single consumption (whole or nothing, FIFO, expiry by the
database clock, its own idempotency key) and fails alone. What the items share is written
once: the lots and pools they drew from are updated once per batch, with one pool event per
pool, so a batch costs far fewer statements and commits than the same consumptions one by
one. Lock order is the ledger's: balances by End User id, then lots in FIFO order, then
pools by id."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from models.balance_rules import end_user_status
from models.balances import (
    NEXT_POOL_VERSION,
    POOL_COLUMNS,
    BalanceChange,
    EndUserBalanceSnapshot,
    PoolSnapshot,
    iso_time,
    write_balance_events,
)
from models.draws import (
    FIFO,
    LIVE_LOT,
    MAX_FEATURE_LENGTH,
    ConsumeResult,
    Draw,
    aware,
    take_fifo,
    validate_credits,
    validate_text,
)
from models.errors import DomainError, InsufficientCredits, ValidationFailed
from models.idempotency import claim_key, request_fingerprint, store_result, validate_key
from models.records import LedgerEntryKind
from models.references import EndUserRef, PoolRef, resolve_end_user, resolve_pool
from models.sql import Sql, dumps, transaction

MAX_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class Consumption:
    end_user: EndUserRef
    pool: str
    credits: int
    feature: str
    idempotency_key: str | None = None
    occurred_at: datetime | None = None
    metadata: dict[str, Any] | None = None
    actor: str | None = None


@dataclass(slots=True)
class _Item:
    index: int
    spec: Consumption
    pool: PoolRef
    end_user_id: int
    occurred_at: datetime | None
    record_id: int | None = None
    draws: list[Draw] = field(default_factory=list)


BatchResult = ConsumeResult | DomainError


async def consume_credits_batch(
    application_id: int, consumptions: list[Consumption], *, actor: str | None = None
) -> list[BatchResult]:
    """One result per consumption, in order: a ConsumeResult or the DomainError it failed
    with. Items that fail change nothing; the others commit together."""
    if not 0 < len(consumptions) <= MAX_BATCH:
        raise ValidationFailed(f"send 1 to {MAX_BATCH:,} consumptions", field="consumptions")
    results: list[BatchResult | None] = [None] * len(consumptions)
    checked: list[tuple[int, Consumption, datetime | None]] = []
    seen_keys: set[str] = set()
    for index, spec in enumerate(consumptions):
        try:
            validate_credits(spec.credits)
            spec.end_user.validate()
            validate_key(spec.idempotency_key)
            validate_text(spec.feature, "feature", MAX_FEATURE_LENGTH, required=True)
            occurred_at = aware(spec.occurred_at, "occurredAt")
            if spec.idempotency_key is not None:
                if spec.idempotency_key in seen_keys:
                    raise ValidationFailed(
                        "idempotencyKey is repeated in this batch", field="idempotencyKey"
                    )
                seen_keys.add(spec.idempotency_key)
        except DomainError as error:
            results[index] = error
            continue
        checked.append((index, spec, occurred_at))

    async def work(db: Sql) -> list[BatchResult | None]:
        outcome = list(results)
        items: list[_Item] = []
        for index, spec, occurred_at in checked:
            try:
                pool = await resolve_pool(db, application_id, spec.pool)
                end_user_id = await resolve_end_user(db, application_id, spec.end_user)
            except DomainError as error:
                outcome[index] = error
                continue
            items.append(_Item(index, spec, pool, end_user_id, occurred_at))
        items.sort(key=lambda item: (item.end_user_id, item.pool.id, item.index))
        await _consume_items(db, application_id, items, outcome, actor)
        return outcome

    final = await transaction(work)
    return [result for result in final if result is not None]


def _rows(count: int, template: str, width: int) -> str:
    """`count` VALUES rows from a template of `{0}`..`{width-1}` parameter slots."""
    rows = []
    for row in range(count):
        slots = [f"${row * width + i + 1}" for i in range(width)]
        rows.append(template.format(*slots))
    return ",".join(rows)


def _pairs_table(count: int) -> str:
    """A derived table (e, p) of `count` (End User id, pool id) pairs, for both dialects."""
    rows = _rows(count, "(CAST({0} AS BIGINT), CAST({1} AS BIGINT))", 2)
    return f"(SELECT column1 AS e, column2 AS p FROM (VALUES {rows}) AS pairs)"


@dataclass(slots=True)
class _Held:
    """One locked End User balance, as the batch moves it (written back once at the end)."""

    allocated: int
    used: int
    expired: int
    remaining: int
    version: int
    threshold: int | None
    allocations: list[dict[str, Any]]


async def _claim(
    db: Sql, application_id: int, item: _Item, outcome: list[BatchResult | None]
) -> bool:
    """Claims the item's idempotency key; False when the item is already answered."""
    spec = item.spec
    if spec.idempotency_key is None:
        return True
    arguments = {
        "pool": item.pool.id,
        "end_user": item.end_user_id,
        "credits": spec.credits,
        "feature": spec.feature,
        "occurred_at": item.occurred_at,
    }
    try:
        claim = await claim_key(
            db,
            application_id,
            spec.idempotency_key,
            "consume",
            request_fingerprint("consume", arguments),
        )
    except DomainError as error:
        outcome[item.index] = error
        return False
    if claim.replay is not None:
        outcome[item.index] = ConsumeResult(
            EndUserBalanceSnapshot.from_json(claim.replay["balance"]),
            usage_event_id=claim.replay["usage_event_id"],
            replayed=True,
        )
        return False
    item.record_id = claim.record_id
    return True


async def _consume_items(
    db: Sql,
    application_id: int,
    items: list[_Item],
    outcome: list[BatchResult | None],
    actor: str | None,
) -> None:
    """The batch in a constant number of statements (plus one per idempotency key): lock
    every balance in one ordered SELECT, read every live allocation in one, draw in Python,
    then write balances, allocations, usage events and ledger entries once each."""
    items = [item for item in items if await _claim(db, application_id, item, outcome)]
    if not items:
        return
    pairs = sorted({(item.end_user_id, item.pool.id) for item in items})
    flat = [value for pair in pairs for value in pair]
    table = _pairs_table(len(pairs))
    locked = await db.rows(
        "SELECT b.end_user_id, b.pool_id, b.allocated, b.used, b.expired, b.remaining,"
        " b.version, COALESCE(b.low_balance_threshold, p.end_user_low_balance_threshold)"
        f" AS threshold FROM end_user_balance b JOIN {table} v"
        " ON b.end_user_id = v.e AND b.pool_id = v.p JOIN credit_pool p ON p.id = b.pool_id"
        " ORDER BY b.end_user_id, b.pool_id FOR UPDATE OF b",
        *flat,
    )
    held = {
        (row["end_user_id"], row["pool_id"]): _Held(
            row["allocated"],
            row["used"],
            row["expired"],
            row["remaining"],
            row["version"],
            row["threshold"],
            [],
        )
        for row in locked
    }
    fifo_keys: dict[int, tuple[Any, ...]] = {}
    for row in await db.rows(
        "SELECT a.id, a.end_user_id, a.pool_id, a.lot_id, a.remaining, l.expires_at,"
        f" l.purchased_at FROM allocation a JOIN credit_pack l ON l.id = a.lot_id JOIN {table} v"
        f" ON a.end_user_id = v.e AND a.pool_id = v.p WHERE a.remaining > 0 AND {LIVE_LOT}"
        f" ORDER BY a.end_user_id, a.pool_id, {FIFO}",
        *flat,
    ):
        held[(row["end_user_id"], row["pool_id"])].allocations.append(row)
        fifo_keys[row["lot_id"]] = (
            row["expires_at"] is None,
            row["expires_at"] or "",
            row["purchased_at"],
            row["lot_id"],
        )

    applied: list[tuple[_Item, EndUserBalanceSnapshot]] = []
    refused_claims: list[int] = []
    for item in items:  # already in lock order
        balance = held.get((item.end_user_id, item.pool.id))
        credits = item.spec.credits
        item.draws = (
            take_fifo(balance.allocations, credits, "remaining")
            if balance is not None and balance.remaining >= credits
            else []
        )
        if balance is None or not item.draws:
            if item.record_id is not None:  # the key stays free for a retry
                refused_claims.append(item.record_id)
            outcome[item.index] = InsufficientCredits(
                f"the End User holds fewer than {credits:,} unexpired credits in this pool",
                field="credits",
            )
            continue
        by_allocation = {draw.allocation_id: draw.credits for draw in item.draws}
        for allocation in balance.allocations:
            allocation["remaining"] -= by_allocation.get(allocation["id"], 0)
            allocation["drawn"] = allocation.get("drawn", 0) + by_allocation.get(
                allocation["id"], 0
            )
        balance.used += credits
        balance.remaining -= credits
        balance.version += 1
        snapshot = EndUserBalanceSnapshot(
            end_user_id=item.end_user_id,
            pool_id=item.pool.id,
            allocated=balance.allocated,
            used=balance.used,
            expired=balance.expired,
            remaining=balance.remaining,
            status=end_user_status(balance.allocated, balance.remaining, balance.threshold),
            version=balance.version,
            threshold=balance.threshold,
        )
        applied.append((item, snapshot))
    if refused_claims:
        marks = ",".join(f"${i + 1}" for i in range(len(refused_claims)))
        await db.run(f"DELETE FROM idempotency_record WHERE id IN ({marks})", *refused_claims)
    if not applied:
        return
    stamped = await _write_balances(db, held)
    applied = [
        (item, replace(snapshot, at=stamped[(item.end_user_id, item.pool.id)]))
        for item, snapshot in applied
    ]
    usage_ids = await _insert_usage(db, application_id, [item for item, _ in applied])
    await _insert_entries(db, application_id, applied, usage_ids, actor)
    for (item, snapshot), usage_event_id in zip(applied, usage_ids, strict=True):
        if item.record_id is not None:
            await store_result(
                db,
                item.record_id,
                {"balance": snapshot.to_json(), "usage_event_id": usage_event_id},
            )
        outcome[item.index] = ConsumeResult(snapshot, usage_event_id=usage_event_id, replayed=False)
    await _update_shared_rows(
        db,
        application_id,
        [
            (item, snapshot, usage_id)
            for (item, snapshot), usage_id in zip(applied, usage_ids, strict=True)
        ],
        fifo_keys,
    )


async def _write_balances(
    db: Sql, held: dict[tuple[int, int], _Held]
) -> dict[tuple[int, int], str]:
    """Writes back every balance and allocation the batch drew from, one statement each;
    the time each balance's new version was stamped with, by (End User, pool)."""
    moved = [(pair, h) for pair, h in held.items() if any(a.get("drawn") for a in h.allocations)]
    args: list[Any] = []
    for (end_user_id, pool_id), h in moved:
        status = end_user_status(h.allocated, h.remaining, h.threshold).value
        args += [end_user_id, pool_id, h.used, h.remaining, status, h.version]
    rows = _rows(
        len(moved),
        "(CAST({0} AS BIGINT), CAST({1} AS BIGINT), CAST({2} AS BIGINT), CAST({3} AS BIGINT),"
        " CAST({4} AS VARCHAR(16)), CAST({5} AS BIGINT))",
        6,
    )
    stamped = await db.rows(
        "UPDATE end_user_balance SET used = v.used, remaining = v.remaining, status = v.status,"
        " version = v.version, updated_at = now() FROM (SELECT column1 AS e, column2 AS p,"
        " column3 AS used, column4 AS remaining, column5 AS status, column6 AS version"
        f" FROM (VALUES {rows}) AS x) AS v"
        " WHERE end_user_balance.end_user_id = v.e AND end_user_balance.pool_id = v.p"
        " RETURNING end_user_balance.end_user_id, end_user_balance.pool_id,"
        " end_user_balance.updated_at",
        *args,
    )
    drawn = [a for _, h in moved for a in h.allocations if a.get("drawn")]
    args = [value for a in drawn for value in (a["id"], a["drawn"])]
    rows = _rows(len(drawn), "(CAST({0} AS BIGINT), CAST({1} AS BIGINT))", 2)
    await db.run(
        "UPDATE allocation SET used = allocation.used + v.d, remaining = allocation.remaining"
        f" - v.d FROM (SELECT column1 AS id, column2 AS d FROM (VALUES {rows}) AS x) AS v"
        " WHERE allocation.id = v.id",
        *args,
    )
    return {(row["end_user_id"], row["pool_id"]): iso_time(row["updated_at"]) for row in stamped}


async def _insert_usage(db: Sql, application_id: int, items: list[_Item]) -> list[int]:
    """One usage event per item, in one statement; ids in item order (both databases assign
    them in VALUES order, so the ascending ids follow the rows)."""
    args: list[Any] = []
    for item in items:
        spec = item.spec
        metadata = None if spec.metadata is None else dumps(spec.metadata)
        args += [application_id, item.pool.id, item.end_user_id, spec.credits, spec.feature]
        args += [spec.idempotency_key, metadata, item.occurred_at]
    rows = await db.rows(
        "INSERT INTO usage_event (application_id, pool_id, end_user_id, credits, feature,"
        " idempotency_key, metadata, occurred_at, created_at) VALUES "
        + _rows(len(items), "({0},{1},{2},{3},{4},{5},{6},COALESCE({7}, now()),now())", 8)
        + " RETURNING id",
        *args,
    )
    return sorted(row["id"] for row in rows)


async def _insert_entries(
    db: Sql,
    application_id: int,
    applied: list[tuple[_Item, EndUserBalanceSnapshot]],
    usage_ids: list[int],
    actor: str | None,
) -> None:
    """Every CONSUME entry of the batch (one per item and lot) in one statement."""
    args: list[Any] = []
    count = 0
    for (item, _), usage_event_id in zip(applied, usage_ids, strict=True):
        spec = item.spec
        for draw in item.draws:
            args += [application_id, item.pool.id, draw.lot_id, item.end_user_id, "CONSUME"]
            args += [-draw.credits, spec.feature, spec.idempotency_key, spec.actor or actor]
            args += [usage_event_id, item.occurred_at]
            count += 1
    await db.run(
        "INSERT INTO ledger_entry (application_id, pool_id, lot_id, end_user_id, kind, amount,"
        " feature, idempotency_key, actor, usage_event_id, occurred_at, created_at) VALUES "
        + _rows(count, "({0},{1},{2},{3},{4},{5},{6},{7},{8},{9},COALESCE({10}, now()),now())", 11),
        *args,
    )


async def _update_shared_rows(
    db: Sql,
    application_id: int,
    applied: list[tuple[_Item, EndUserBalanceSnapshot, int]],
    fifo_keys: dict[int, tuple[Any, ...]],
) -> None:
    """Lots, then pools, each once, in lock order; then every balance event."""
    by_lot: dict[int, int] = defaultdict(int)
    by_pool: dict[int, int] = defaultdict(int)
    pool_keys: dict[int, str] = {}
    for item, _, _ in applied:
        for draw in item.draws:
            by_lot[draw.lot_id] += draw.credits
        by_pool[item.pool.id] += item.spec.credits
        pool_keys[item.pool.id] = item.pool.key
    for lot_id in sorted(by_lot, key=fifo_keys.__getitem__):
        await db.run(
            "UPDATE credit_pack SET used = used + $2 WHERE id = $1", lot_id, by_lot[lot_id]
        )
    for pool_id in sorted(by_pool):
        row = await db.row(
            "UPDATE credit_pool SET used = used + $2, end_user_remaining = end_user_remaining - $2,"
            f" {NEXT_POOL_VERSION} WHERE id = $1 RETURNING {POOL_COLUMNS}",
            pool_id,
            by_pool[pool_id],
        )
        assert row is not None
        changes: list[BalanceChange] = [
            (balance, -item.spec.credits) for item, balance, _ in applied if item.pool.id == pool_id
        ]
        changes.append((PoolSnapshot.from_row(row), -by_pool[pool_id]))
        await write_balance_events(
            db, application_id, pool_keys[pool_id], LedgerEntryKind.CONSUME, changes
        )
