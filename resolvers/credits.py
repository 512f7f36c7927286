"""Ledger mutations: purchase, allocate, release and consume credits. Each translates its
input, calls the ledger operation in `models.ledger`, and maps domain errors to UserErrors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import strawberry

from models.access import writable_application
from models.consume_batch import MAX_BATCH, Consumption
from models.consumption_combiner import submit_consumptions
from models.credits import CreditPack as PackRow
from models.credits import CreditPool as PoolRow
from models.ledger import (
    BalanceResult,
    ConsumeResult,
    allocate_credits,
    consume_credits,
    purchase_credits,
    release_credits,
)
from resolvers.context import Info, principal_of
from resolvers.end_users import EndUserBalance, EndUserRef
from resolvers.errors import UserError, errors_in_payload, user_errors
from resolvers.pools import CreditPack, CreditPool, PurchaseCreditsInput, PurchaseCreditsPayload


@strawberry.input
class AllocateCreditsInput:
    application_id: strawberry.ID
    end_user: EndUserRef
    pool: str
    credits: int
    idempotency_key: str | None = None


@strawberry.type
class AllocateCreditsPayload:
    balance: EndUserBalance | None = None
    replayed: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ReleaseCreditsPayload:
    balance: EndUserBalance | None = None
    replayed: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class ConsumptionInput:
    end_user: EndUserRef
    pool: str
    credits: int
    feature: str
    idempotency_key: str | None = None
    occurred_at: datetime | None = None


@strawberry.input
class ConsumeCreditsInput(ConsumptionInput):
    application_id: strawberry.ID


@strawberry.type
class ConsumeCreditsPayload:
    balance: EndUserBalance | None = None
    replayed: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(PurchaseCreditsPayload)
async def resolve_purchase(info: Info, input: PurchaseCreditsInput) -> PurchaseCreditsPayload:
    principal = principal_of(info)
    application_id = await writable_application(principal, input.application_id)
    result = await purchase_credits(
        application_id,
        input.pool,
        input.credits,
        expires_at=input.expires_at,
        package=input.package,
        reference=input.reference,
        idempotency_key=input.idempotency_key,
        actor=principal.key_id,
    )
    pool_row = await PoolRow.get(application_id=application_id, key=input.pool)
    pack_row = await PackRow.get(id=result.pack_id)
    return PurchaseCreditsPayload(
        pool=CreditPool.from_row(pool_row),
        pack=CreditPack.from_row(pack_row),
        replayed=result.replayed,
    )


MovePayload = TypeVar("MovePayload", AllocateCreditsPayload, ReleaseCreditsPayload)


async def _move(
    info: Info,
    input: AllocateCreditsInput,
    operation: Callable[..., Awaitable[BalanceResult]],
    payload: type[MovePayload],
) -> MovePayload:
    principal = principal_of(info)
    application_id = await writable_application(principal, input.application_id)
    result = await operation(
        application_id,
        input.pool,
        input.end_user.to_domain(),
        input.credits,
        idempotency_key=input.idempotency_key,
        actor=principal.key_id,
    )
    return payload(
        balance=EndUserBalance.from_snapshot(info, input.pool, result.balance),
        replayed=result.replayed,
    )


@errors_in_payload(AllocateCreditsPayload)
async def resolve_allocate(info: Info, input: AllocateCreditsInput) -> AllocateCreditsPayload:
    return await _move(info, input, allocate_credits, AllocateCreditsPayload)


@errors_in_payload(ReleaseCreditsPayload)
async def resolve_release(info: Info, input: AllocateCreditsInput) -> ReleaseCreditsPayload:
    return await _move(info, input, release_credits, ReleaseCreditsPayload)


@errors_in_payload(ConsumeCreditsPayload)
async def resolve_consume(info: Info, input: ConsumeCreditsInput) -> ConsumeCreditsPayload:
    principal = principal_of(info)
    application_id = await writable_application(principal, input.application_id)
    result = await consume_credits(
        application_id,
        input.pool,
        input.end_user.to_domain(),
        input.credits,
        input.feature,
        idempotency_key=input.idempotency_key,
        occurred_at=input.occurred_at,
        actor=principal.key_id,
    )
    return ConsumeCreditsPayload(
        balance=EndUserBalance.from_snapshot(info, input.pool, result.balance),
        replayed=result.replayed,
    )


@strawberry.input
class ConsumeCreditsBatchInput:
    application_id: strawberry.ID
    consumptions: list[ConsumptionInput] = strawberry.field(
        description=f"1 to {MAX_BATCH:,} consumptions, each with its own result."
    )


@strawberry.type
class ConsumeCreditsBatchPayload:
    results: list[ConsumeCreditsPayload] = strawberry.field(
        default_factory=list, description="One result per consumption, in input order."
    )
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(ConsumeCreditsBatchPayload)
async def resolve_consume_batch(
    info: Info, input: ConsumeCreditsBatchInput
) -> ConsumeCreditsBatchPayload:
    principal = principal_of(info)
    application_id = await writable_application(principal, input.application_id)
    results = await submit_consumptions(
        application_id,
        [
            Consumption(
                end_user=c.end_user.to_domain(),
                pool=c.pool,
                credits=c.credits,
                feature=c.feature,
                idempotency_key=c.idempotency_key,
                occurred_at=c.occurred_at,
                actor=principal.key_id,
            )
            for c in input.consumptions
        ],
    )
    return ConsumeCreditsBatchPayload(
        results=[
            ConsumeCreditsPayload(
                balance=EndUserBalance.from_snapshot(info, c.pool, r.balance), replayed=r.replayed
            )
            if isinstance(r, ConsumeResult)
            else ConsumeCreditsPayload(errors=user_errors(r))
            for c, r in zip(input.consumptions, results, strict=True)
        ]
    )
