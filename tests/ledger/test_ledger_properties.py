"""Property tests of the ledger (docs/ledger.md#rules 1, 2, 4 and 5).

Hypothesis generates sequences of purchases, allocations, releases, consumptions, lot
expiries and expiry sweeps over two pools and three End Users of a fresh application.

* Sequential: every operation runs alone and is checked against an in-memory model that
  predicts whether it succeeds or fails with INSUFFICIENT_CREDITS, which lots it draws from
  (FIFO by expiry) and every counter of pools, End Users, lots and allocations.
* Concurrent: batches of operations run at once. Their outcomes are not predictable, so the
  test checks the invariants (conservation, no negative counter, counters = ledger sums), the
  totals of the operations that succeeded, and that no expired lot is drawn from again.

A lot is expired by moving its `expires_at` into the past in the database (expiry is decided
by the database clock), so no test has to sleep."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from models.accounts import create_application, create_organization
from models.credits import Allocation, CreditPack, CreditPool, EndUserBalance
from models.end_users import EndUserInput, upsert_end_users
from models.errors import InsufficientCredits
from models.expiry import expire_lots
from models.ledger import allocate_credits, consume_credits, purchase_credits, release_credits
from models.references import EndUserRef
from models.sql import Sql, transaction
from models.verify import verify_ledger
from tests.conftest import Backend

POOLS = ("ai", "inbox_preview")
USERS = ("u0", "u1", "u2")
FEATURE = "ai_generation"

SETTINGS = settings(
    max_examples=30,
    deadline=None,  # database round trips vary too much for a per-example deadline
    suppress_health_check=[HealthCheck.too_slow],
)

# ------------------------------------------------------------------------------ operations


@dataclass(frozen=True)
class Purchase:
    pool: str
    credits: int
    expires_in_days: int | None  # few distinct values, so that lots tie on expiry


@dataclass(frozen=True)
class Allocate:
    pool: str
    user: str
    credits: int


@dataclass(frozen=True)
class Release:
    pool: str
    user: str
    credits: int


@dataclass(frozen=True)
class Consume:
    pool: str
    user: str
    credits: int


@dataclass(frozen=True)
class ExpireLot:
    pick: int  # index (modulo) into the lots that have not expired yet


@dataclass(frozen=True)
class Sweep:
    pass


Operation = Purchase | Allocate | Release | Consume | ExpireLot | Sweep

_pools = st.sampled_from(("ai", "ai", "inbox_preview"))  # mostly one pool: more contention
_users = st.sampled_from(USERS)
# Draws smaller than allocations and allocations smaller than purchases, so that most
# operations fit and the refusals stay near the edge.
_purchase = st.builds(Purchase, _pools, st.integers(1, 80), st.none() | st.integers(1, 3))
_allocate = st.builds(Allocate, _pools, _users, st.integers(1, 30))
_release = st.builds(Release, _pools, _users, st.integers(1, 12))
_consume = st.builds(Consume, _pools, _users, st.integers(1, 12))
# Repeated branches weight the mix: enough purchases to work with, few expiries.
OPERATIONS = st.one_of(
    _purchase,
    _purchase,
    _allocate,
    _allocate,
    _release,
    _consume,
    _consume,
    st.builds(ExpireLot, st.integers(0, 99)),
    st.just(Sweep()),
)

# ------------------------------------------------------------------------------ the model


@dataclass
class Counters:
    allocated: int = 0
    used: int = 0
    expired: int = 0
    remaining: int = 0


@dataclass
class ModelLot:
    id: int
    pool: str
    seq: int  # purchase order, which is also purchased_at and id order
    credits: int
    expires_at: datetime | None
    unallocated: int
    used: int = 0
    expired: int = 0
    dead: bool = False  # expires_at is in the past: unusable even before the sweep
    swept: bool = False

    def fifo_key(self) -> tuple[bool, float, int]:
        # docs/ledger.md rule 5: first to expire first, never-expiring last, then oldest purchase.
        stamp = self.expires_at.timestamp() if self.expires_at else 0.0
        return (self.expires_at is None, stamp, self.seq)


class LedgerModel:
    """What the ledger of one application should hold after a sequence of operations."""

    def __init__(self) -> None:
        self.lots: dict[int, ModelLot] = {}
        self.balances: dict[tuple[str, str], Counters] = {}  # (user, pool)
        self.allocations: dict[tuple[str, int], Counters] = {}  # (user, lot id)

    def _live_lots(self, pool: str) -> list[ModelLot]:
        lots = [lot for lot in self.lots.values() if lot.pool == pool and not lot.dead]
        return sorted(lots, key=ModelLot.fifo_key)

    def purchase(self, lot_id: int, pool: str, credits: int, expires_at: datetime | None) -> None:
        self.lots[lot_id] = ModelLot(lot_id, pool, len(self.lots), credits, expires_at, credits)

    def allocate(self, user: str, pool: str, credits: int) -> bool:
        live = [lot for lot in self._live_lots(pool) if lot.unallocated > 0]
        if sum(lot.unallocated for lot in live) < credits:
            return False
        wanted = credits
        for lot in live:
            take = min(wanted, lot.unallocated)
            if take == 0:
                break
            lot.unallocated -= take
            held = self.allocations.setdefault((user, lot.id), Counters())
            held.allocated += take
            held.remaining += take
            wanted -= take
        balance = self.balances.setdefault((user, pool), Counters())
        balance.allocated += credits
        balance.remaining += credits
        return True

    def _draw_held(
        self, user: str, pool: str, credits: int
    ) -> list[tuple[ModelLot, Counters, int]] | None:
        """The FIFO draws of `credits` from the user's unexpired allocations, or None."""
        held = [
            (lot, self.allocations[(user, lot.id)])
            for lot in self._live_lots(pool)
            if (user, lot.id) in self.allocations and self.allocations[(user, lot.id)].remaining
        ]
        if sum(counters.remaining for _, counters in held) < credits:
            return None
        draws = []
        wanted = credits
        for lot, counters in held:
            take = min(wanted, counters.remaining)
            if take == 0:
                break
            draws.append((lot, counters, take))
            wanted -= take
        return draws

    def release(self, user: str, pool: str, credits: int) -> bool:
        draws = self._draw_held(user, pool, credits)
        if draws is None:
            return False
        for lot, counters, take in draws:
            counters.allocated -= take
            counters.remaining -= take
            lot.unallocated += take
        balance = self.balances[(user, pool)]
        balance.allocated -= credits
        balance.remaining -= credits
        return True

    def consume(self, user: str, pool: str, credits: int) -> bool:
        draws = self._draw_held(user, pool, credits)
        if draws is None:
            return False
        for lot, counters, take in draws:
            counters.used += take
            counters.remaining -= take
            lot.used += take
        balance = self.balances[(user, pool)]
        balance.used += credits
        balance.remaining -= credits
        return True

    def expire(self, pick: int) -> int | None:
        """Marks a not yet expired lot expired; its id, or None when there is none."""
        candidates = sorted(lot.id for lot in self.lots.values() if not lot.dead)
        if not candidates:
            return None
        lot_id = candidates[pick % len(candidates)]
        self.lots[lot_id].dead = True
        return lot_id

    def sweep(self) -> int:
        """Books the remainder of every expired lot as expired; the credits expired."""
        total = 0
        for lot in self.lots.values():
            if not lot.dead or lot.swept:
                continue
            for (user, lot_id), counters in self.allocations.items():
                if lot_id != lot.id or counters.remaining == 0:
                    continue
                amount = counters.remaining
                counters.expired += amount
                counters.remaining = 0
                balance = self.balances[(user, lot.pool)]
                balance.expired += amount
                balance.remaining -= amount
                lot.expired += amount
            lot.expired += lot.unallocated
            lot.unallocated = 0
            lot.swept = True
            total += lot.expired
        return total

    def pool(self, pool: str) -> dict[str, int]:
        lots = [lot for lot in self.lots.values() if lot.pool == pool]
        balances = [b for (_, key), b in self.balances.items() if key == pool]
        return {
            "purchased": sum(lot.credits for lot in lots),
            "allocated": sum(b.allocated for b in balances),
            "used": sum(lot.used for lot in lots),
            "expired": sum(lot.expired for lot in lots),
            "end_user_remaining": sum(b.remaining for b in balances),
        }

    def state(self) -> dict[str, dict[Any, dict[str, Any]]]:
        return {
            "pools": {pool: self.pool(pool) for pool in POOLS},
            "balances": {key: _balance_dict(c) for key, c in self.balances.items()},
            "lots": {
                lot.id: {
                    "pool": lot.pool,
                    "credits": lot.credits,
                    "unallocated": lot.unallocated,
                    "used": lot.used,
                    "expired": lot.expired,
                    "swept": lot.swept,
                }
                for lot in self.lots.values()
            },
            "allocations": {key: _counters_dict(c) for key, c in self.allocations.items()},
        }


def _counters_dict(counters: Counters) -> dict[str, int]:
    return {
        "allocated": counters.allocated,
        "used": counters.used,
        "expired": counters.expired,
        "remaining": counters.remaining,
    }


def _balance_dict(counters: Counters) -> dict[str, Any]:
    # No thresholds are set: NO_ALLOCATION without an allocation, else EXHAUSTED at 0 and
    # OK otherwise (docs/balances.md#statuses).
    if counters.allocated <= 0:
        status = "NO_ALLOCATION"
    else:
        status = "OK" if counters.remaining > 0 else "EXHAUSTED"
    return {**_counters_dict(counters), "status": status}


# ---------------------------------------------------------------------- the real ledger


@dataclass
class Tenant:
    application_id: int
    user_ids: dict[str, int]
    pool_keys: dict[int, str]
    # Purchase expiries are this plus whole days, so that equal day counts tie exactly.
    base: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(hours=1))

    def expires_at(self, days: int | None) -> datetime | None:
        return None if days is None else self.base + timedelta(days=days)


async def _fresh_tenant() -> Tenant:
    """A new application per example: the database is shared by every example."""
    organization, _ = await create_organization(f"properties {uuid.uuid4().hex[:6]}")
    application = await create_application(organization.id, "ledger properties")
    users = await upsert_end_users(application.id, [EndUserInput(name) for name in USERS])
    pools = await CreditPool.filter(application_id=application.id)
    return Tenant(
        application.id,
        {user.external_id: user.id for user in users},
        {pool.id: pool.key for pool in pools},
    )


async def _expire_now(lot_id: int) -> None:
    """Moves the lot's expiry an hour into the past, as if time had passed."""
    past = datetime.now(UTC) - timedelta(hours=1)

    async def work(db: Sql) -> None:
        await db.run("UPDATE credit_pack SET expires_at = $2 WHERE id = $1", lot_id, past)

    await transaction(work)


async def _sweep_all() -> int:
    """Sweeps until nothing is due (one call sweeps at most a batch); the credits expired."""
    total = 0
    while True:
        result = await expire_lots()
        total += result.credits
        if result.lots == 0:
            return total


async def _db_state(
    tenant: Tenant, sections: tuple[str, ...] = ("pools", "balances", "lots", "allocations")
) -> dict[str, dict[Any, dict[str, Any]]]:
    """The counters of the tenant's pools, End User balances, lots and allocations."""
    pool_key = tenant.pool_keys
    user_name = {user_id: name for name, user_id in tenant.user_ids.items()}
    state: dict[str, dict[Any, dict[str, Any]]] = {}
    if "pools" in sections:
        state["pools"] = {
            pool.key: {
                "purchased": pool.purchased,
                "allocated": pool.allocated,
                "used": pool.used,
                "expired": pool.expired,
                "end_user_remaining": pool.end_user_remaining,
            }
            for pool in await CreditPool.filter(id__in=list(pool_key))
        }
    if "balances" in sections:
        state["balances"] = {
            (user_name[b.end_user_id], pool_key[b.pool_id]): {
                "allocated": b.allocated,
                "used": b.used,
                "expired": b.expired,
                "remaining": b.remaining,
                "status": b.status.value,
            }
            for b in await EndUserBalance.filter(pool_id__in=list(pool_key))
        }
    if "lots" in sections:
        state["lots"] = {
            lot.id: {
                "pool": pool_key[lot.pool_id],
                "credits": lot.credits,
                "unallocated": lot.unallocated,
                "used": lot.used,
                "expired": lot.expired,
                "swept": lot.swept_at is not None,
            }
            for lot in await CreditPack.filter(pool_id__in=list(pool_key))
        }
    if "allocations" in sections:
        state["allocations"] = {
            (user_name[a.end_user_id], a.lot_id): {
                "allocated": a.allocated,
                "used": a.used,
                "expired": a.expired,
                "remaining": a.remaining,
            }
            for a in await Allocation.filter(pool_id__in=list(pool_key))
        }
    return state


def _check_invariants(state: dict[str, dict[Any, dict[str, Any]]]) -> None:
    """docs/ledger.md#balances and rule 1 on one tenant's counters, whatever produced them."""
    for section, rows in state.items():
        for key, row in rows.items():
            for name, value in row.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    assert value >= 0, f"{section} {key}: {name} is negative ({value})"
    lots = state["lots"]
    held_by_lot: dict[int, int] = defaultdict(int)
    by_balance: dict[tuple[str, str], Counters] = defaultdict(Counters)
    for (user, lot_id), a in state["allocations"].items():
        assert a["remaining"] == a["allocated"] - a["used"] - a["expired"], (user, lot_id, a)
        held_by_lot[lot_id] += a["remaining"]
        total = by_balance[(user, lots[lot_id]["pool"])]
        total.allocated += a["allocated"]
        total.used += a["used"]
        total.expired += a["expired"]
        total.remaining += a["remaining"]
    for lot_id, lot in lots.items():
        parts = lot["unallocated"] + held_by_lot[lot_id] + lot["used"] + lot["expired"]
        assert lot["credits"] == parts, f"lot {lot_id} does not conserve credits: {lot}"
    for key, b in state["balances"].items():
        assert b["remaining"] == b["allocated"] - b["used"] - b["expired"], (key, b)
        assert _counters_dict(by_balance[key]) == {k: b[k] for k in _counters_dict(Counters())}
    for pool, p in state["pools"].items():
        pool_lots = [lot for lot in lots.values() if lot["pool"] == pool]
        balances = [b for (_, key), b in state["balances"].items() if key == pool]
        assert p == {
            "purchased": sum(lot["credits"] for lot in pool_lots),
            "allocated": sum(b["allocated"] for b in balances),
            "used": sum(lot["used"] for lot in pool_lots),
            "expired": sum(lot["expired"] for lot in pool_lots),
            "end_user_remaining": sum(b["remaining"] for b in balances),
        }, f"pool {pool}"


def _assert_same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for section in actual:  # one section at a time, for a readable diff
        assert actual[section] == expected[section], f"{section}: database (left) != model"


async def _check_everything(tenant: Tenant, expected: dict[str, Any] | None = None) -> None:
    state = await _db_state(tenant)
    if expected is not None:
        _assert_same(state, expected)
    _check_invariants(state)
    assert await verify_ledger() == []


def _ref(user: str) -> EndUserRef:
    return EndUserRef(external_id=user)


# ---------------------------------------------------------------------- sequential runs

# Every run starts with lots of differing expiry and allocations to every End User in both
# pools, so that most generated draws have something to take (and to fight over).
_OPENING = [
    Purchase("ai", 60, None),
    Purchase("ai", 30, 2),
    Purchase("inbox_preview", 40, 1),
    *(Allocate("ai", user, 15) for user in USERS),
    *(Allocate("inbox_preview", user, 8) for user in USERS),
]


_DRAWS: dict[type, tuple[Any, Any]] = {
    Allocate: (allocate_credits, LedgerModel.allocate),
    Release: (release_credits, LedgerModel.release),
    Consume: (consume_credits, LedgerModel.consume),
}


async def _step(tenant: Tenant, model: LedgerModel, op: Operation) -> None:
    """Runs one operation and checks its outcome and returned balance against the model."""
    app = tenant.application_id
    match op:
        case Purchase(pool, credits, days):
            result = await purchase_credits(app, pool, credits, expires_at=tenant.expires_at(days))
            model.purchase(result.pack_id, pool, credits, tenant.expires_at(days))
            assert result.pool is not None
            returned = {k: getattr(result.pool, k) for k in model.pool(pool)}
            assert returned == model.pool(pool)
        case (
            Allocate(pool, user, credits)
            | Release(pool, user, credits)
            | Consume(pool, user, credits)
        ):
            call, predict = _DRAWS[type(op)]
            args: tuple[Any, ...] = (app, pool, _ref(user), credits)
            if isinstance(op, Consume):
                args += (FEATURE,)
            fits = predict(model, user, pool, credits)
            event(f"{type(op).__name__} {'succeeds' if fits else 'is refused'}")
            if not fits:
                with pytest.raises(InsufficientCredits):
                    await call(*args)
                return
            outcome = await call(*args)
            assert _snapshot(outcome.balance) == _balance_dict(model.balances[(user, pool)])
        case ExpireLot(pick):
            lot_id = model.expire(pick)
            if lot_id is not None:
                event("a lot expires")
                await _expire_now(lot_id)
        case Sweep():
            predicted = model.sweep()
            event(f"sweep expires {'some' if predicted else 'no'} credits")
            # >=: the sweep is global, and other tests may leave lots of their own due.
            assert await _sweep_all() >= predicted


def _snapshot(balance: Any) -> dict[str, Any]:
    return {
        "allocated": balance.allocated,
        "used": balance.used,
        "expired": balance.expired,
        "remaining": balance.remaining,
        "status": balance.status.value,
    }


@SETTINGS
@given(ops=st.lists(OPERATIONS, min_size=10, max_size=30))
async def test_sequential_operations_match_the_model(
    backend: Backend, ops: list[Operation]
) -> None:
    tenant = await _fresh_tenant()
    model = LedgerModel()
    for op in [*_OPENING, *ops]:
        await _step(tenant, model, op)
        # Lots and allocations after every step (pools and balances are checked through
        # what the operation returned), so that a failure points at the step that went wrong.
        _assert_same(await _db_state(tenant, ("lots", "allocations")), model.state())
    # Before the final sweep expired lots still hold credits that nobody can use.
    await _check_everything(tenant, model.state())
    await _step(tenant, model, Sweep())
    await _check_everything(tenant, model.state())


# ---------------------------------------------------------------------- concurrent runs


@dataclass
class Totals:
    """What the operations that succeeded add up to."""

    purchased: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lots: dict[int, tuple[str, int]] = field(default_factory=dict)  # id: (pool, credits)
    allocated: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    used: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    expired_lots: set[int] = field(default_factory=set)
    # For each expired lot, its (used, Σ allocated) once its expiry had committed: neither
    # may move afterwards, since nothing draws from an expired lot (rule 4).
    frozen: dict[int, tuple[int, int]] = field(default_factory=dict)


async def _run(tenant: Tenant, op: Operation, live_lots: list[int]) -> Any:
    app = tenant.application_id
    match op:
        case Purchase(pool, credits, days):
            return await purchase_credits(app, pool, credits, expires_at=tenant.expires_at(days))
        case Allocate(pool, user, credits):
            return await allocate_credits(app, pool, _ref(user), credits)
        case Release(pool, user, credits):
            return await release_credits(app, pool, _ref(user), credits)
        case Consume(pool, user, credits):
            return await consume_credits(app, pool, _ref(user), credits, FEATURE)
        case ExpireLot(pick):
            if not live_lots:
                return None
            lot_id = live_lots[pick % len(live_lots)]
            await _expire_now(lot_id)
            return lot_id
        case Sweep():
            return await expire_lots()  # one pass, so that sweepers really race
    raise AssertionError(op)


async def _run_batch(tenant: Tenant, totals: Totals, batch: list[Operation]) -> None:
    live_lots = sorted(set(totals.lots) - totals.expired_lots)
    results = await asyncio.gather(
        *(_run(tenant, op, live_lots) for op in batch), return_exceptions=True
    )
    for op, result in zip(batch, results, strict=True):
        event(f"{type(op).__name__} {'fails' if isinstance(result, Exception) else 'succeeds'}")
        if isinstance(result, BaseException):
            # Only a draw may fail, and only for want of credits.
            if isinstance(result, InsufficientCredits) and isinstance(
                op, Allocate | Release | Consume
            ):
                continue
            raise result
        match op:
            case Purchase(pool, credits, _):
                totals.purchased[pool] += credits
                totals.lots[result.pack_id] = (pool, credits)
            case Allocate(pool, user, credits):
                totals.allocated[(user, pool)] += credits
            case Release(pool, user, credits):
                totals.allocated[(user, pool)] -= credits
            case Consume(pool, user, credits):
                totals.used[(user, pool)] += credits
            case ExpireLot() if result is not None:
                totals.expired_lots.add(result)


async def _check_totals(tenant: Tenant, totals: Totals, *, swept: bool = False) -> None:
    state = await _db_state(tenant)
    _check_invariants(state)
    assert await verify_ledger() == []
    lots = state["lots"]
    assert {lot_id: (lot["pool"], lot["credits"]) for lot_id, lot in lots.items()} == totals.lots
    for pool in POOLS:
        assert state["pools"][pool]["purchased"] == totals.purchased[pool]
        assert state["pools"][pool]["used"] == sum(
            used for (_, key), used in totals.used.items() if key == pool
        )
    for user in USERS:
        for pool in POOLS:
            balance = state["balances"].get((user, pool), _balance_dict(Counters()))
            assert balance["allocated"] == totals.allocated[(user, pool)], (user, pool)
            assert balance["used"] == totals.used[(user, pool)], (user, pool)
    allocated_by_lot: dict[int, int] = defaultdict(int)
    for (_, lot_id), a in state["allocations"].items():
        allocated_by_lot[lot_id] += a["allocated"]
    for lot_id, lot in lots.items():
        if lot_id not in totals.expired_lots:
            assert lot["expired"] == 0 and not lot["swept"], (lot_id, lot)
            continue
        now = (lot["used"], allocated_by_lot[lot_id])
        assert totals.frozen.setdefault(lot_id, now) == now, f"expired lot {lot_id} drawn from"
        if lot["swept"] or swept:
            # Swept: its whole remainder expired, nothing is left to draw.
            assert lot["swept"] and lot["unallocated"] == 0, (lot_id, lot)
            assert lot["expired"] == lot["credits"] - lot["used"], (lot_id, lot)


@SETTINGS
@given(batches=st.lists(st.lists(OPERATIONS, min_size=2, max_size=8), min_size=2, max_size=4))
async def test_concurrent_batches_keep_the_ledger_consistent(
    backend: Backend, batches: list[list[Operation]]
) -> None:
    tenant = await _fresh_tenant()
    totals = Totals()
    for op in _OPENING:
        await _run_batch(tenant, totals, [op])
    for batch in batches:
        await _run_batch(tenant, totals, batch)
        await _check_totals(tenant, totals)
    await _sweep_all()
    await _check_totals(tenant, totals, swept=True)
