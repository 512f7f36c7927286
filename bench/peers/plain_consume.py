"""The write-path peer of `bench.consume_peer`: `consumeCredits` as a team would write it
with Strawberry and Tortoise ORM and without usagegraph, over usagegraph's own tables.

One Starlette app served by uvicorn (one process, uvicorn's default loop and HTTP
implementation, as `usagegraph serve` runs it), Strawberry on its ASGI integration with
parsed documents cached (`ParserCache`), Tortoise registered in the app's lifespan. Its
models below map the few columns it touches of usagegraph's tables. Per request:

- the API key (`Authorization: Bearer ug_<key id>_<secret>`, the secret's SHA-256 in
  `api_key`) is looked up once and then remembered for 60 s; it must be an ADMIN key of the
  application in the input;
- one read of the End User's balance with its pool (by externalId or id, and pool key);
- one transaction: with an idempotency key, its row in `idempotency_record` first (a second
  request with the key then fails on the unique index and is answered with the balance as
  it is now, `replayed: true`; the first answer is not stored); the balance UPDATE guarded
  by `remaining >= credits`, then the balance read back; the End User's oldest live
  allocation holding all the credits (none: INSUFFICIENT_CREDITS; credits split over two
  lots are refused rather than drawn FIFO), its UPDATE; the usage event and the CONSUME
  ledger entry; the lot's and the pool's counters; the balance's status when it changed.

So it writes what `usagegraph verify` checks. It does not combine concurrent consumptions,
write balance events to the outbox (no live balances, no webhooks, no alerts), log
requests, limit rates or query cost, or cache references.

With `PLAIN_CONSUME_SHAPE=minimal` it is the smallest app that still answers the same
(the peer as first defined): after the same read, one transaction of the balance UPDATE
guarded by `remaining >= credits`, the balance read back, and one CONSUME ledger row (on the
pool's first lot, looked up once); no idempotency, allocation, lot, pool, usage event or
status. The counters it leaves are then out of step with the ledger by design.

    DATABASE_URL=postgres://... python -m bench.peers.plain_consume --port 8001
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from enum import StrEnum

import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache
from tortoise import fields
from tortoise.contrib.starlette import RegisterTortoise
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

KEY_SECONDS = 60.0  # how long a verified API key is remembered

# ------------------------------------------------------------------------------ models


class ApiKey(Model):
    id = fields.BigIntField(primary_key=True)
    key_id = fields.CharField(max_length=32)
    application_id = fields.BigIntField(null=True)
    role = fields.CharField(max_length=16)
    secret_hash = fields.CharField(max_length=64)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_key"


class EndUser(Model):
    id = fields.BigIntField(primary_key=True)
    application_id = fields.BigIntField()
    external_id = fields.CharField(max_length=200)

    class Meta:
        table = "end_user"


class CreditPool(Model):
    id = fields.BigIntField(primary_key=True)
    application_id = fields.BigIntField()
    key = fields.CharField(max_length=64)
    used = fields.BigIntField()
    end_user_remaining = fields.BigIntField()
    end_user_low_balance_threshold = fields.BigIntField(null=True)
    version = fields.BigIntField()
    changed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "credit_pool"


class CreditPack(Model):
    id = fields.BigIntField(primary_key=True)
    pool_id = fields.BigIntField()
    used = fields.BigIntField()
    expires_at = fields.DatetimeField(null=True)

    class Meta:
        table = "credit_pack"


class EndUserBalance(Model):
    id = fields.BigIntField(primary_key=True)
    end_user: fields.ForeignKeyRelation[EndUser] = fields.ForeignKeyField(
        "models.EndUser", related_name="balances"
    )
    pool: fields.ForeignKeyRelation[CreditPool] = fields.ForeignKeyField(
        "models.CreditPool", related_name="balances"
    )
    allocated = fields.BigIntField()
    used = fields.BigIntField()
    expired = fields.BigIntField()
    remaining = fields.BigIntField()
    low_balance_threshold = fields.BigIntField(null=True)
    status = fields.CharField(max_length=16)
    version = fields.BigIntField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "end_user_balance"


class Allocation(Model):
    id = fields.BigIntField(primary_key=True)
    end_user_id = fields.BigIntField()
    pool_id = fields.BigIntField()
    lot: fields.ForeignKeyRelation[CreditPack] = fields.ForeignKeyField(
        "models.CreditPack", related_name="allocations"
    )
    used = fields.BigIntField()
    remaining = fields.BigIntField()

    class Meta:
        table = "allocation"


class UsageEvent(Model):
    id = fields.BigIntField(primary_key=True)
    application_id = fields.BigIntField()
    pool_id = fields.BigIntField()
    end_user_id = fields.BigIntField()
    credits = fields.BigIntField()
    feature = fields.CharField(max_length=100)
    idempotency_key = fields.CharField(max_length=255, null=True)
    occurred_at = fields.DatetimeField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "usage_event"


class LedgerEntry(Model):
    id = fields.BigIntField(primary_key=True)
    application_id = fields.BigIntField()
    pool_id = fields.BigIntField()
    lot_id = fields.BigIntField()
    end_user_id = fields.BigIntField(null=True)
    kind = fields.CharField(max_length=16)
    amount = fields.BigIntField()
    feature = fields.CharField(max_length=100, null=True)
    idempotency_key = fields.CharField(max_length=255, null=True)
    actor = fields.CharField(max_length=64, null=True)
    usage_event_id = fields.BigIntField(null=True)
    occurred_at = fields.DatetimeField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "ledger_entry"


class IdempotencyRecord(Model):
    id = fields.BigIntField(primary_key=True)
    application_id = fields.BigIntField()
    key = fields.CharField(max_length=255)
    operation = fields.CharField(max_length=64)
    request_hash = fields.CharField(max_length=64)
    created_at = fields.DatetimeField()

    class Meta:
        table = "idempotency_record"


# ------------------------------------------------------------------------------ schema


@strawberry.enum
class BalanceStatus(StrEnum):
    OK = "OK"
    LOW = "LOW"
    EXHAUSTED = "EXHAUSTED"
    NO_ALLOCATION = "NO_ALLOCATION"


@strawberry.enum
class ErrorCode(StrEnum):
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    NOT_FOUND = "NOT_FOUND"
    VALIDATION = "VALIDATION"
    FORBIDDEN = "FORBIDDEN"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"


@strawberry.type
class UserError:
    code: ErrorCode
    message: str


@strawberry.input
class EndUserRef:
    id: strawberry.ID | None = None
    external_id: str | None = None


@strawberry.input
class ConsumeCreditsInput:
    application_id: strawberry.ID
    end_user: EndUserRef
    pool: str
    credits: int
    feature: str
    idempotency_key: str | None = None
    occurred_at: datetime | None = None


@strawberry.type
class Balance:
    pool: str
    allocated: int
    used: int
    remaining: int
    status: BalanceStatus
    version: int


@strawberry.type
class ConsumeCreditsPayload:
    balance: Balance | None = None
    replayed: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)


class Refused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def status_of(remaining: int, threshold: int | None) -> BalanceStatus:
    if remaining <= 0:
        return BalanceStatus.EXHAUSTED
    if threshold is not None and remaining <= threshold:
        return BalanceStatus.LOW
    return BalanceStatus.OK


def answer(balance: EndUserBalance, pool: CreditPool, replayed: bool) -> ConsumeCreditsPayload:
    return ConsumeCreditsPayload(
        balance=Balance(
            pool=pool.key,
            allocated=balance.allocated,
            used=balance.used,
            remaining=balance.remaining,
            status=BalanceStatus(balance.status),
            version=balance.version,
        ),
        replayed=replayed,
    )


_keys: dict[str, tuple[float, ApiKey]] = {}


async def api_key(request: Request) -> ApiKey:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    cached = _keys.get(presented)
    if cached is not None and time.monotonic() - cached[0] < KEY_SECONDS:
        return cached[1]
    key_id, _, secret = presented.removeprefix("ug_").partition("_")
    found = await ApiKey.get_or_none(key_id=key_id, revoked_at=None)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    if scheme.lower() != "bearer" or found is None or found.secret_hash != digest:
        raise PermissionError("unknown API key")
    _keys[presented] = (time.monotonic(), found)
    return found


async def balance_of(application_id: int, ref: EndUserRef, pool: str) -> EndUserBalance:
    query = EndUserBalance.filter(end_user__application_id=application_id, pool__key=pool)
    if ref.external_id is not None:
        query = query.filter(end_user__external_id=ref.external_id)
    elif ref.id is not None and ref.id.isdigit():
        query = query.filter(end_user_id=int(ref.id))
    else:
        raise Refused(ErrorCode.VALIDATION, "endUser needs an id or an externalId")
    balance = await query.select_related("pool").first()
    if balance is None:
        raise Refused(ErrorCode.NOT_FOUND, "no balance of that End User in that pool")
    return balance


async def take(balance_id: int, credits: int, now: datetime) -> EndUserBalance:
    """The balance UPDATE guarded by remaining, and the balance as it then is."""
    taken = await EndUserBalance.filter(id=balance_id, remaining__gte=credits).update(
        used=F("used") + credits,
        remaining=F("remaining") - credits,
        version=F("version") + 1,
        updated_at=now,
    )
    if not taken:
        raise Refused(ErrorCode.INSUFFICIENT_CREDITS, "not enough credits")
    return await EndUserBalance.get(id=balance_id)


MINIMAL = os.environ.get("PLAIN_CONSUME_SHAPE") == "minimal"
_first_lots: dict[int, int] = {}


async def first_lot(pool_id: int) -> int:
    lot = _first_lots.get(pool_id)
    if lot is None:
        found = await CreditPack.filter(pool_id=pool_id).order_by("id").first()
        if found is None:
            raise Refused(ErrorCode.INSUFFICIENT_CREDITS, "the pool holds no lot")
        lot = _first_lots[pool_id] = found.id
    return lot


async def consume_minimal(
    application_id: int, key: ApiKey, input: ConsumeCreditsInput, found: EndUserBalance
) -> ConsumeCreditsPayload:
    """The balance UPDATE guarded by remaining and one ledger row, in one transaction."""
    pool, credits, now = found.pool, input.credits, datetime.now(UTC)
    lot = await first_lot(pool.id)
    async with in_transaction():
        balance = await take(found.id, credits, now)
        await LedgerEntry.create(
            application_id=application_id,
            pool_id=pool.id,
            lot_id=lot,
            end_user_id=balance.end_user_id,  # type: ignore[attr-defined]
            kind="CONSUME",
            amount=-credits,
            feature=input.feature,
            actor=key.key_id,
            occurred_at=input.occurred_at or now,
            created_at=now,
        )
    return answer(balance, pool, replayed=False)


async def consume(
    application_id: int, key: ApiKey, input: ConsumeCreditsInput, found: EndUserBalance
) -> ConsumeCreditsPayload:
    pool, credits, now = found.pool, input.credits, datetime.now(UTC)
    fingerprint = hashlib.sha256(
        json.dumps(
            [input.end_user.external_id, input.end_user.id, input.pool, credits, input.feature]
        ).encode()
    ).hexdigest()
    try:
        async with in_transaction():
            if input.idempotency_key is not None:
                await IdempotencyRecord.create(
                    application_id=application_id,
                    key=input.idempotency_key,
                    operation="consumeCredits",
                    request_hash=fingerprint,
                    created_at=now,
                )
            balance = await take(found.id, credits, now)
            allocation = (
                await Allocation.filter(
                    Q(lot__expires_at__isnull=True) | Q(lot__expires_at__gt=now),
                    end_user_id=found.end_user_id,  # type: ignore[attr-defined]
                    pool_id=pool.id,
                    remaining__gte=credits,
                )
                .order_by("lot_id")
                .first()
            )
            if allocation is None:
                raise Refused(ErrorCode.INSUFFICIENT_CREDITS, "no single live lot holds them")
            await Allocation.filter(id=allocation.id).update(
                used=F("used") + credits, remaining=F("remaining") - credits
            )
            usage = await UsageEvent.create(
                application_id=application_id,
                pool_id=pool.id,
                end_user_id=balance.end_user_id,  # type: ignore[attr-defined]
                credits=credits,
                feature=input.feature,
                idempotency_key=input.idempotency_key,
                occurred_at=input.occurred_at or now,
                created_at=now,
            )
            await LedgerEntry.create(
                application_id=application_id,
                pool_id=pool.id,
                lot_id=allocation.lot_id,  # type: ignore[attr-defined]
                end_user_id=balance.end_user_id,  # type: ignore[attr-defined]
                kind="CONSUME",
                amount=-credits,
                feature=input.feature,
                idempotency_key=input.idempotency_key,
                actor=key.key_id,
                usage_event_id=usage.id,
                occurred_at=input.occurred_at or now,
                created_at=now,
            )
            await CreditPack.filter(id=allocation.lot_id).update(  # type: ignore[attr-defined]
                used=F("used") + credits
            )
            await CreditPool.filter(id=pool.id).update(
                used=F("used") + credits,
                end_user_remaining=F("end_user_remaining") - credits,
                version=F("version") + 1,
                changed_at=now,
            )
            threshold = balance.low_balance_threshold
            if threshold is None:
                threshold = pool.end_user_low_balance_threshold
            status = status_of(balance.remaining, threshold)
            if status != balance.status:
                balance.status = status
                await balance.save(update_fields=["status"])
    except IntegrityError:  # the idempotency key is taken: answer the balance as it is now
        if input.idempotency_key is None:
            raise
        record = await IdempotencyRecord.get(
            application_id=application_id, key=input.idempotency_key
        )
        if record.request_hash != fingerprint:
            raise Refused(ErrorCode.IDEMPOTENCY_CONFLICT, "key used with other arguments") from None
        return answer(await EndUserBalance.get(id=found.id), pool, replayed=True)
    return answer(balance, pool, replayed=False)


@strawberry.type
class Query:
    @strawberry.field
    def service(self) -> str:
        return "plain Strawberry + Tortoise consumeCredits"


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def consume_credits(
        self, info: strawberry.Info, input: ConsumeCreditsInput
    ) -> ConsumeCreditsPayload:
        key = await api_key(info.context["request"])
        try:
            if key.role != "ADMIN" or str(key.application_id) != input.application_id:
                raise Refused(ErrorCode.FORBIDDEN, "the key cannot write that application")
            if input.credits < 1:
                raise Refused(ErrorCode.VALIDATION, "credits must be positive")
            application_id = int(input.application_id)
            found = await balance_of(application_id, input.end_user, input.pool)
            write = consume_minimal if MINIMAL else consume
            return await write(application_id, key, input, found)
        except Refused as refused:
            error = UserError(code=refused.code, message=str(refused))
            return ConsumeCreditsPayload(errors=[error])


# Parsed documents are cached; validated ones too when PLAIN_CONSUME_VALIDATION_CACHE=1
# (`bench.consume_peer --peer-validation-cache`).
extensions: list[Callable[[], SchemaExtension]] = [lambda: ParserCache(maxsize=256)]
if os.environ.get("PLAIN_CONSUME_VALIDATION_CACHE") == "1":
    extensions.append(lambda: ValidationCache(maxsize=256))
schema = strawberry.Schema(query=Query, mutation=Mutation, extensions=extensions)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with RegisterTortoise(
        app, db_url=os.environ["DATABASE_URL"], modules={"models": [__name__]}
    ):
        yield


app = Starlette(routes=[Route("/graphql", GraphQL(schema))], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8001)
    options = parser.parse_args()
    uvicorn.run(
        "bench.peers.plain_consume:app", host="127.0.0.1", port=options.port, access_log=False
    )


if __name__ == "__main__":
    main()
