"""Shared set-up for ledger tests: End Users with allocations, counters read back."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tortoise import Tortoise
from tortoise.expressions import Q

from models.accounts import create_application, create_organization
from models.alerts import set_low_balance_threshold
from models.credits import CreditPack, CreditPool, EndUserBalance
from models.end_users import EndUserInput, upsert_end_users
from models.ledger import (
    allocate_credits,
    consume_credits,
    purchase_credits,
    release_credits,
)
from models.references import EndUserRef

VOLATILE_COLUMNS: dict[str, set[str]] = {}
EXCLUDED_MODELS = {
    # Written off the request path in batches: B's own set-up calls land at any time.
    "RequestLogEntry",
    # The request log's hourly counts, written with it (and merged by a job at any time).
    "RequestVolume",
    # Deleted by the relay once published, whenever it gets to them.
    "OutboxEvent",
}


async def end_users_holding(
    application_id: int, count: int, credits_each: int, pool: str = "ai"
) -> list[int]:
    """`count` End Users, each allocated `credits_each` from one fresh purchase."""
    users = await upsert_end_users(
        application_id, [EndUserInput(f"user-{i}", name=f"User {i}") for i in range(count)]
    )
    await purchase_credits(application_id, pool, count * credits_each)
    for user in users:
        await allocate_credits(application_id, pool, EndUserRef(id=user.id), credits_each)
    return [user.id for user in users]


async def pool_counters(application_id: int, key: str = "ai") -> CreditPool:
    return await CreditPool.get(application_id=application_id, key=key)


async def balance_of(end_user_id: int, pool: CreditPool) -> EndUserBalance:
    return await EndUserBalance.get(end_user_id=end_user_id, pool_id=pool.id)


async def move_expiry_to_past(pack_id: int) -> None:
    """Test-only: a lot whose expiry has passed, without waiting for it."""
    conn = Tortoise.get_connection("default")
    await conn.execute_query(
        f"UPDATE credit_pack SET expires_at = '2000-01-01 00:00:00+00:00' WHERE id = {int(pack_id)}"
    )


def balance_changes(app: int, ids: list[int]) -> dict[str, Callable[[], Awaitable[object]]]:
    """One change of each kind that moves a balance of pool "ai" or its status, by name, on
    End Users `ids` (at least four, each holding at least 5 credits there)."""

    def one(user: int) -> EndUserRef:
        return EndUserRef(id=ids[user])

    return {
        "consume": lambda: consume_credits(app, "ai", one(0), 3, "ai_generation"),
        "allocate": lambda: allocate_credits(app, "ai", one(1), 5),
        "release": lambda: release_credits(app, "ai", one(2), 4),
        "threshold": lambda: set_low_balance_threshold(app, "ai", 36, end_user=one(3)),
        "default": lambda: set_low_balance_threshold(app, "ai", 34, end_user_default=True),
        "purchase": lambda: purchase_credits(app, "ai", 10),
    }


async def ledger_count(application_id: int, kind: str) -> int:
    from models.records import LedgerEntry

    return await LedgerEntry.filter(application_id=application_id, kind=kind).count()


__all__ = ["CreditPack"]


async def application_with_allocations(users: int = 3) -> tuple[int, list[int]]:
    """A new application with both pools bought and `users` End Users holding credits in
    each: its id and the End Users' ids."""
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    application = await create_application(organization.id, "reporting")
    app = application.id
    await purchase_credits(app, "ai", 1_000_000)
    await purchase_credits(app, "inbox_preview", 100_000)
    rows = await upsert_end_users(app, [EndUserInput(f"u{i}") for i in range(users)])
    for row in rows:
        await allocate_credits(app, "ai", EndUserRef(id=row.id), 100_000)
        await allocate_credits(app, "inbox_preview", EndUserRef(id=row.id), 10_000)
    return app, [row.id for row in rows]


async def application_rows(application_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every row that belongs to the application, by model: those with its id, then those
    pointing at one of them, until nothing more is found."""
    models = {name: m for name, m in Tortoise.apps["models"].items() if name not in EXCLUDED_MODELS}
    owned: dict[str, set[Any]] = {"Application": {application_id}}
    while True:
        found: dict[str, set[Any]] = {}
        for name, model in models.items():
            if name == "Application":
                continue
            meta = model._meta
            conditions = [
                Q(**{f"{fk}_id__in": list(owned[related])})
                for fk in meta.fk_fields
                if (related := meta.fields_map[fk].related_model.__name__) in owned
            ]
            if "application" not in meta.fk_fields and "application_id" in meta.fields_map:
                conditions.append(Q(application_id=application_id))
            if conditions:
                rows = await model.filter(Q(*conditions, join_type="OR")).values_list(
                    "id", flat=True
                )
                found[name] = set(rows)
        if all(owned.get(name) == ids for name, ids in found.items()):
            break
        owned.update(found)
    snapshot = {}
    for name, ids in owned.items():
        volatile = VOLATILE_COLUMNS.get(name, set())
        rows = await models[name].filter(id__in=list(ids)).order_by("id").values()
        snapshot[name] = [{k: v for k, v in row.items() if k not in volatile} for row in rows]
    return snapshot
