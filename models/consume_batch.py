"""Many consumptions in one transaction, each with its own result (`consumeCreditsBatch`).

Each item keeps every rule of a single consumption (whole or nothing, FIFO, expiry by the
database clock, its own idempotency key) and fails alone. What the items share is written
once: the lots and pools they drew from are updated once per batch, with one pool event per
pool, so a batch costs far fewer statements and commits than the same consumptions one by
one. Lock order is the ledger's: balances by End User id, then lots in FIFO order, then
pools by id."""

from __future__ import annotations

import asyncio
import contextvars
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.balances import (
    END_USER_BALANCE_COLUMNS,
    POOL_COLUMNS,
    BalanceChange,
    EndUserBalanceSnapshot,
    PoolSnapshot,
    end_user_status_sql,
    write_balance_events,
)
from models.draws import (
    MAX_FEATURE_LENGTH,
    ConsumeResult,
    Draw,
    aware,
    insert_ledger_entries,
    live_allocations,
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


async def _consume_items(
    db: Sql,
    application_id: int,
    items: list[_Item],
    outcome: list[BatchResult | None],
    actor: str | None,
) -> None:
    fifo_keys: dict[int, tuple[Any, ...]] = {}
    applied: list[tuple[_Item, EndUserBalanceSnapshot, int]] = []
    for item in items:
        spec = item.spec
        if spec.idempotency_key is not None:
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
                continue
            if claim.replay is not None:
                outcome[item.index] = ConsumeResult(
                    EndUserBalanceSnapshot.from_json(claim.replay["balance"]),
                    usage_event_id=claim.replay["usage_event_id"],
                    replayed=True,
                )
                continue
            item.record_id = claim.record_id
        balance = await _debit(db, item, fifo_keys)
        if balance is None:
            if item.record_id is not None:  # the key stays free for a retry
                await db.run("DELETE FROM idempotency_record WHERE id = $1", item.record_id)
            outcome[item.index] = InsufficientCredits(
                f"the End User holds fewer than {spec.credits:,} unexpired credits in this pool",
                field="credits",
            )
            continue
        usage_event_id = await db.value(
            "INSERT INTO usage_event (application_id, pool_id, end_user_id, credits, feature,"
            " idempotency_key, metadata, occurred_at, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()), now()) RETURNING id",
            application_id,
            item.pool.id,
            item.end_user_id,
            spec.credits,
            spec.feature,
            spec.idempotency_key,
            None if spec.metadata is None else dumps(spec.metadata),
            item.occurred_at,
        )
        await insert_ledger_entries(
            db,
            application_id,
            item.pool.id,
            item.end_user_id,
            LedgerEntryKind.CONSUME,
            item.draws,
            -1,
            feature=spec.feature,
            idempotency_key=spec.idempotency_key,
            actor=spec.actor or actor,
            usage_event_id=usage_event_id,
            occurred_at=item.occurred_at,
        )
        if item.record_id is not None:
            await store_result(
                db, item.record_id, {"balance": balance.to_json(), "usage_event_id": usage_event_id}
            )
        applied.append((item, balance, usage_event_id))
        outcome[item.index] = ConsumeResult(balance, usage_event_id=usage_event_id, replayed=False)
    await _update_shared_rows(db, application_id, applied, fifo_keys)


async def _debit(
    db: Sql, item: _Item, fifo_keys: dict[int, tuple[Any, ...]]
) -> EndUserBalanceSnapshot | None:
    """Debits one item from its End User, or None (and no change) if it does not fit."""
    credits = item.spec.credits
    held = await db.value(
        "SELECT remaining FROM end_user_balance WHERE end_user_id = $1 AND pool_id = $2 FOR UPDATE",
        item.end_user_id,
        item.pool.id,
    )
    if held is None or held < credits:
        return None
    rows = await live_allocations(db, item.end_user_id, item.pool.id)
    item.draws = take_fifo(rows, credits, "remaining")
    if not item.draws:
        return None
    for row in rows:
        fifo_keys[row["lot_id"]] = (
            row["expires_at"] is None,
            row["expires_at"] or "",
            row["purchased_at"],
            row["lot_id"],
        )
    row = await db.row(
        "UPDATE end_user_balance SET used = used + $3, remaining = remaining - $3,"
        " status = " + end_user_status_sql("remaining - $3") + ","
        " version = version + 1, updated_at = now()"
        f" WHERE end_user_id = $1 AND pool_id = $2 RETURNING {END_USER_BALANCE_COLUMNS}",
        item.end_user_id,
        item.pool.id,
        credits,
    )
    assert row is not None
    for draw in item.draws:
        await db.run(
            "UPDATE allocation SET used = used + $2, remaining = remaining - $2 WHERE id = $1",
            draw.allocation_id,
            draw.credits,
        )
    return EndUserBalanceSnapshot.from_row(row)


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
            f" version = version + 1 WHERE id = $1 RETURNING {POOL_COLUMNS}",
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


# ----------------------------------------------------------- combining concurrent single calls


@dataclass(slots=True)
class _Waiting:
    consumption: Consumption
    result: asyncio.Future[ConsumeResult]


class _Combiner:
    """One application's single consumptions in this process: while a batch of them is
    committing, new ones queue, and the queue commits as the next batch. Under load one
    transaction (one lock on the shared lot and pool rows, one commit) serves many callers;
    alone, a call commits at once. Each caller gets its own result or error."""

    def __init__(self, application_id: int) -> None:
        self.application_id = application_id
        self.waiting: list[_Waiting] = []
        self.drainer: asyncio.Task[None] | None = None

    async def submit(self, consumption: Consumption) -> ConsumeResult:
        result: asyncio.Future[ConsumeResult] = asyncio.get_running_loop().create_future()
        self.waiting.append(_Waiting(consumption, result))
        if self.drainer is None:
            # A fresh context: the drainer must not inherit a caller's open transaction.
            self.drainer = asyncio.create_task(self._drain(), context=contextvars.Context())
        return await result

    def _next_batch(self) -> list[_Waiting]:
        """Up to MAX_BATCH waiting calls, at most one per idempotency key (a repeat waits
        for the next batch and then answers as a replay). A call whose caller went away
        before its batch began is dropped, as a cancelled transaction would be."""
        batch: list[_Waiting] = []
        later: list[_Waiting] = []
        keys: set[str] = set()
        for waiting in self.waiting:
            if waiting.result.done():  # its caller was cancelled before the batch began
                continue
            key = waiting.consumption.idempotency_key
            if len(batch) >= MAX_BATCH or (key is not None and key in keys):
                later.append(waiting)
                continue
            if key is not None:
                keys.add(key)
            batch.append(waiting)
        self.waiting = later
        return batch

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    results = await consume_credits_batch(
                        self.application_id, [w.consumption for w in batch]
                    )
                except Exception as error:  # the whole transaction failed: every caller hears
                    for waiting in batch:
                        if not waiting.result.done():
                            waiting.result.set_exception(error)
                    continue
                for waiting, outcome in zip(batch, results, strict=True):
                    if waiting.result.done():  # its caller went away
                        continue
                    if isinstance(outcome, ConsumeResult):
                        waiting.result.set_result(outcome)
                    else:
                        waiting.result.set_exception(outcome)
        finally:
            self.drainer = None
            for waiting in self.waiting:  # only when this task itself was cancelled
                if not waiting.result.done():
                    waiting.result.cancel()
            self.waiting = []
            if _combiners.get(self.application_id) is self:
                del _combiners[self.application_id]


_combiners: dict[int, _Combiner] = {}


async def submit_consumption(application_id: int, consumption: Consumption) -> ConsumeResult:
    """Consumes as `consume_credits_batch` would for a batch of one, committed together with
    whatever else this process is consuming for the application at the same moment."""
    combiner = _combiners.get(application_id)
    if combiner is None:
        combiner = _combiners[application_id] = _Combiner(application_id)
    return await combiner.submit(consumption)
