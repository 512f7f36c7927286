"""Bad input to every ledger operation: a typed domain error and no change at all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.credits import Allocation, CreditPack, CreditPool, EndUserBalance
from models.end_users import EndUserInput, upsert_end_users
from models.errors import DomainError, ErrorCode
from models.ledger import allocate_credits, consume_credits, purchase_credits, release_credits
from models.records import IdempotencyRecord, LedgerEntry, OutboxEvent, UsageEvent
from models.references import EndUserRef
from tests.ledger_helpers import end_users_holding


async def _state(app: int) -> tuple[Any, ...]:
    """Everything a ledger write can touch for one application."""
    pools = await CreditPool.filter(application_id=app).order_by("id").values()
    pool_ids = [p["id"] for p in pools]
    return (
        pools,
        await CreditPack.filter(pool_id__in=pool_ids).order_by("id").values(),
        await EndUserBalance.filter(pool_id__in=pool_ids).order_by("id").values(),
        await Allocation.filter(pool_id__in=pool_ids).order_by("id").values(),
        await LedgerEntry.filter(application_id=app).count(),
        await UsageEvent.filter(application_id=app).count(),
        await OutboxEvent.filter(application_id=app).count(),
        await IdempotencyRecord.filter(application_id=app).count(),
    )


BIG = 1_000_000_001
ALICE = EndUserRef(external_id="user-0")
NOBODY = EndUserRef(external_id="nobody")
BOTH = EndUserRef(id=1, external_id="user-0")
NEITHER = EndUserRef()
NAIVE = datetime(2030, 1, 1)
PAST = datetime(2020, 1, 1, tzinfo=UTC)

Call = Callable[[int], Awaitable[Any]]
CASES: list[tuple[str, ErrorCode, Call]] = [
    ("purchase zero", ErrorCode.VALIDATION, lambda a: purchase_credits(a, "ai", 0)),
    ("purchase negative", ErrorCode.VALIDATION, lambda a: purchase_credits(a, "ai", -5)),
    ("purchase oversized", ErrorCode.VALIDATION, lambda a: purchase_credits(a, "ai", BIG)),
    ("purchase float", ErrorCode.VALIDATION, lambda a: purchase_credits(a, "ai", 1.5)),
    ("purchase bool", ErrorCode.VALIDATION, lambda a: purchase_credits(a, "ai", True)),
    ("purchase unknown pool", ErrorCode.NOT_FOUND, lambda a: purchase_credits(a, "gold", 5)),
    (
        "purchase expired lot",
        ErrorCode.VALIDATION,
        lambda a: purchase_credits(a, "ai", 5, expires_at=PAST),
    ),
    (
        "purchase naive expiry",
        ErrorCode.VALIDATION,
        lambda a: purchase_credits(a, "ai", 5, expires_at=NAIVE),
    ),
    (
        "purchase past the Int total",
        ErrorCode.VALIDATION,
        lambda a: purchase_credits(a, "ai", 1_000_000_000),  # 2e9 held already
    ),
    (
        "purchase long package",
        ErrorCode.VALIDATION,
        lambda a: purchase_credits(a, "ai", 5, package="x" * 201),
    ),
    ("allocate zero", ErrorCode.VALIDATION, lambda a: allocate_credits(a, "ai", ALICE, 0)),
    ("allocate negative", ErrorCode.VALIDATION, lambda a: allocate_credits(a, "ai", ALICE, -1)),
    ("allocate oversized", ErrorCode.VALIDATION, lambda a: allocate_credits(a, "ai", ALICE, BIG)),
    ("allocate unknown pool", ErrorCode.NOT_FOUND, lambda a: allocate_credits(a, "x", ALICE, 1)),
    (
        "allocate unknown End User",
        ErrorCode.NOT_FOUND,
        lambda a: allocate_credits(a, "ai", NOBODY, 1),
    ),
    ("allocate both refs", ErrorCode.VALIDATION, lambda a: allocate_credits(a, "ai", BOTH, 1)),
    ("allocate no ref", ErrorCode.VALIDATION, lambda a: allocate_credits(a, "ai", NEITHER, 1)),
    (
        "allocate more than unallocated",
        ErrorCode.INSUFFICIENT_CREDITS,
        lambda a: allocate_credits(a, "inbox_preview", ALICE, 1),
    ),
    ("release zero", ErrorCode.VALIDATION, lambda a: release_credits(a, "ai", ALICE, 0)),
    ("release oversized", ErrorCode.VALIDATION, lambda a: release_credits(a, "ai", ALICE, BIG)),
    ("release unknown pool", ErrorCode.NOT_FOUND, lambda a: release_credits(a, "x", ALICE, 1)),
    (
        "release unknown End User",
        ErrorCode.NOT_FOUND,
        lambda a: release_credits(a, "ai", NOBODY, 1),
    ),
    (
        "release more than held",
        ErrorCode.INSUFFICIENT_CREDITS,
        lambda a: release_credits(a, "ai", ALICE, 11),
    ),
    (
        "consume zero",
        ErrorCode.VALIDATION,
        lambda a: consume_credits(a, "ai", ALICE, 0, "ai_generation"),
    ),
    (
        "consume negative",
        ErrorCode.VALIDATION,
        lambda a: consume_credits(a, "ai", ALICE, -3, "ai_generation"),
    ),
    (
        "consume oversized",
        ErrorCode.VALIDATION,
        lambda a: consume_credits(a, "ai", ALICE, BIG, "ai_generation"),
    ),
    (
        "consume unknown pool",
        ErrorCode.NOT_FOUND,
        lambda a: consume_credits(a, "nope", ALICE, 1, "ai_generation"),
    ),
    (
        "consume unknown End User",
        ErrorCode.NOT_FOUND,
        lambda a: consume_credits(a, "ai", NOBODY, 1, "ai_generation"),
    ),
    (
        "consume unknown End User id",
        ErrorCode.NOT_FOUND,
        lambda a: consume_credits(a, "ai", EndUserRef(id=999_999_999), 1, "ai_generation"),
    ),
    (
        "consume id out of range",
        ErrorCode.VALIDATION,
        lambda a: consume_credits(a, "ai", EndUserRef(id=2**70), 1, "ai_generation"),
    ),
    (
        "consume both refs",
        ErrorCode.VALIDATION,
        lambda a: consume_credits(a, "ai", BOTH, 1, "ai_generation"),
    ),
    (
        "consume empty feature",
        ErrorCode.VALIDATION,
        lambda a: consume_credits(a, "ai", ALICE, 1, ""),
    ),
    (
        "consume naive occurredAt",
        ErrorCode.VALIDATION,
        lambda a: consume_credits(a, "ai", ALICE, 1, "ai_generation", occurred_at=NAIVE),
    ),
    (
        "consume long idempotency key",
        ErrorCode.VALIDATION,
        lambda a: consume_credits(a, "ai", ALICE, 1, "ai_generation", idempotency_key="k" * 256),
    ),
    (
        "consume more than held",
        ErrorCode.INSUFFICIENT_CREDITS,
        lambda a: consume_credits(a, "ai", ALICE, 11, "ai_generation"),
    ),
    (
        "consume with a used key and other arguments",
        ErrorCode.IDEMPOTENCY_CONFLICT,
        lambda a: consume_credits(a, "ai", ALICE, 2, "ai_generation", idempotency_key="used"),
    ),
]


@pytest.mark.parametrize(("label", "code", "call"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_a_typed_error_and_changes_nothing(
    tenant, outbox_held, label: str, code: ErrorCode, call: Call
) -> None:
    app = tenant.application_id
    await end_users_holding(app, count=1, credits_each=10)
    await purchase_credits(app, "ai", 1_000_000_000)
    await purchase_credits(app, "ai", 1_000_000_000 - 10)
    await consume_credits(app, "ai", ALICE, 1, "ai_generation", idempotency_key="used")
    await release_credits(app, "ai", ALICE, 1)
    await allocate_credits(app, "ai", ALICE, 2)  # Alice holds 10 of the pool's 2e9
    before = await _state(app)

    with pytest.raises(DomainError) as caught:
        await call(app)

    assert caught.value.code == code, caught.value
    assert caught.value.message
    assert await _state(app) == before


async def test_end_user_upsert_rejects_bad_batches(tenant, outbox_held) -> None:
    app = tenant.application_id
    for batch in (
        [],
        [EndUserInput("")],
        [EndUserInput("a"), EndUserInput("a")],
        [EndUserInput("x" * 201)],
        [EndUserInput("b", email="not-an-email")],
        [EndUserInput(f"u{i}") for i in range(1001)],
    ):
        with pytest.raises(DomainError) as caught:
            await upsert_end_users(app, batch)
        assert caught.value.code == ErrorCode.VALIDATION
    assert await _state(app) == await _state(app)
    from models.credits import EndUser

    assert await EndUser.filter(application_id=app).count() == 0


async def test_expiry_in_the_future_is_accepted(tenant) -> None:
    result = await purchase_credits(
        tenant.application_id, "ai", 5, expires_at=datetime.now(UTC) + timedelta(minutes=5)
    )
    assert result.pool is not None and result.pool.purchased == 5
