"""Concurrent consumption calls of one application combined into shared transactions.

Each call (one consumeCredits, or one consumeCreditsBatch) keeps every rule of
`consume_credits_batch` and gets its own results; under load one transaction, one lock on the
shared lot and pool rows and one commit serve many callers."""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass

from models.clock import booking_time
from models.consume_batch import MAX_BATCH, BatchResult, Consumption, consume_credits_batch
from models.draws import ConsumeResult
from models.errors import DomainError, ValidationFailed


@dataclass(slots=True)
class _Waiting:
    """One call's consumptions (one for consumeCredits, a batch's for consumeCreditsBatch),
    committed in the same transaction, and the call's results."""

    consumptions: list[Consumption]
    keys: frozenset[str]
    result: asyncio.Future[list[BatchResult]]


MAX_DRAINERS = 2  # one batch gathers its rows while the one before it commits


class _Combiner:
    """One application's consumption calls in this process: while transactions of them are
    committing, new calls queue, and the queue commits as the next transaction. Under load
    one transaction (one lock on the shared lot and pool rows, one commit) serves many
    callers; alone, a call commits at once. A call's consumptions (a batch's) always commit
    together, and each gets its own result or error. Two transactions may be under way at
    once; their row locks (taken in the ledger's order) keep them apart wherever they touch
    the same balances. Batches combined so wait in this queue, in order, instead of on each
    other's row locks in PostgreSQL, whose waits are not first come first served (64
    concurrent batches of 100: p99 10 s)."""

    def __init__(self, application_id: int) -> None:
        self.application_id = application_id
        self.waiting: list[_Waiting] = []
        self.drainers: set[asyncio.Task[None]] = set()

    async def submit(self, consumptions: list[Consumption]) -> list[BatchResult]:
        result: asyncio.Future[list[BatchResult]] = asyncio.get_running_loop().create_future()
        keys = frozenset(c.idempotency_key for c in consumptions if c.idempotency_key)
        self.waiting.append(_Waiting(consumptions, keys, result))
        if len(self.drainers) < MAX_DRAINERS:
            # A fresh context: a drainer must not inherit a caller's open transaction.
            drainer = asyncio.create_task(self._drain(), context=contextvars.Context())
            self.drainers.add(drainer)
        return await result

    def _next_batch(self) -> list[_Waiting]:
        """Waiting calls, in order, up to MAX_BATCH consumptions, none sharing an
        idempotency key with another (a repeat waits for the next transaction and then
        answers as a replay). A call whose caller went away before its transaction began is
        dropped, as a cancelled transaction would be."""
        batch: list[_Waiting] = []
        later: list[_Waiting] = []
        keys: set[str] = set()
        size = 0
        for waiting in self.waiting:
            if waiting.result.done():  # its caller was cancelled before the batch began
                continue
            count = len(waiting.consumptions)
            if batch and (size + count > MAX_BATCH or not keys.isdisjoint(waiting.keys)):
                later.append(waiting)
                continue
            keys |= waiting.keys
            size += count
            batch.append(waiting)
        self.waiting = later
        return batch

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch = self._next_batch()
                if not batch:
                    continue
                committing = asyncio.ensure_future(
                    consume_credits_batch(
                        self.application_id, [c for w in batch for c in w.consumptions]
                    )
                )
                try:
                    # Shielded: cancelling the drainer (shutdown) must not cut a transaction
                    # in half; it finishes, and its callers still get their answers.
                    await asyncio.shield(committing)
                except asyncio.CancelledError:
                    committing.add_done_callback(lambda done, b=batch: _answer(b, done))
                    raise
                except Exception:  # the whole transaction failed: every caller hears
                    pass
                _answer(batch, committing)
        finally:
            current = asyncio.current_task()
            if current is not None:
                self.drainers.discard(current)  # type: ignore[arg-type]
            if not self.drainers:
                for waiting in self.waiting:  # only when the drainers were cancelled
                    if not waiting.result.done():
                        waiting.result.cancel()
                self.waiting = []
                if _combiners.get(self.application_id) is self:
                    del _combiners[self.application_id]


def _answer(batch: list[_Waiting], committed: asyncio.Future[list[BatchResult]]) -> None:
    """Gives every caller of a transaction its results, or the transaction's failure."""
    failure = None if committed.cancelled() else committed.exception()
    start = 0
    for waiting in batch:
        end = start + len(waiting.consumptions)
        if waiting.result.done():  # its caller went away
            pass
        elif committed.cancelled():
            waiting.result.cancel()
        elif failure is not None:
            waiting.result.set_exception(failure)
        else:
            waiting.result.set_result(committed.result()[start:end])
        start = end


_combiners: dict[int, _Combiner] = {}


async def _submit(application_id: int, consumptions: list[Consumption]) -> list[BatchResult]:
    if booking_time() is not None:
        # History booked at a time of its own commits alone: a combined transaction runs
        # in a drainer's context, on the real clock.
        return await consume_credits_batch(application_id, consumptions)
    combiner = _combiners.get(application_id)
    if combiner is None:
        combiner = _combiners[application_id] = _Combiner(application_id)
    return await combiner.submit(consumptions)


async def submit_consumption(application_id: int, consumption: Consumption) -> ConsumeResult:
    """Consumes as `consume_credits_batch` would for a batch of one, committed together with
    whatever else this process is consuming for the application at the same moment."""
    (outcome,) = await _submit(application_id, [consumption])
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


async def submit_consumptions(
    application_id: int, consumptions: list[Consumption]
) -> list[BatchResult]:
    """`consume_credits_batch`, committed in one transaction with whatever else this process
    is consuming for the application at the same moment."""
    if not 0 < len(consumptions) <= MAX_BATCH:
        raise ValidationFailed(f"send 1 to {MAX_BATCH:,} consumptions", field="consumptions")
    return await _submit(application_id, consumptions)
