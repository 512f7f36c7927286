"""The plain lines a dashboard reads instead of ORM objects (an application with its pools,
a pool's newest packs) carry what the ORM rows they stand for hold, on both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from models.accounts import create_application, create_organization
from models.credits import CreditPack
from models.errors import NotFound
from models.ledger import purchase_credits
from models.pools import application_and_pools, newest_packs, pool_lines
from models.request_log import as_utc
from models.tenancy import Application
from tests.conftest import Backend


async def _application(plan: str | None = None) -> int:
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    return (await create_application(organization.id, "reads", plan)).id


async def test_an_application_comes_with_its_pools(backend: Backend) -> None:
    app = await _application("pro")
    await purchase_credits(app, "ai", 500)
    line, pools = await application_and_pools(app)
    row = await Application.get(id=app)
    assert (line.id, line.name, line.plan) == (row.id, "reads", "pro")
    assert line.created_at == as_utc(row.created_at)
    assert pools == await pool_lines([app])
    assert [(p.key, p.purchased) for p in pools] == [("ai", 500), ("inbox_preview", 0)]
    with pytest.raises(NotFound):
        await application_and_pools(app + 1_000_000)


async def test_the_newest_packs_are_the_rows_newest_first(backend: Backend) -> None:
    app = await _application()
    later = datetime.now(UTC) + timedelta(days=30)
    for credits in (10, 20, 30, 40):
        await purchase_credits(
            app, "ai", credits, expires_at=later if credits % 20 else None, package=f"p{credits}"
        )
    _, pools = await application_and_pools(app)
    ai, inbox = (pool.id for pool in pools)
    found = await newest_packs([ai, inbox], 3)
    assert found[inbox] == []
    rows = await CreditPack.filter(pool_id=ai).order_by("-purchased_at", "-id").limit(3)
    assert [
        (p.id, p.credits, p.unallocated, p.used, p.expired, p.package, p.reference)
        for p in found[ai]
    ] == [(r.id, r.credits, r.unallocated, r.used, r.expired, r.package, r.reference) for r in rows]
    assert [(p.purchased_at, p.expires_at) for p in found[ai]] == [
        (as_utc(r.purchased_at), None if r.expires_at is None else as_utc(r.expires_at))
        for r in rows
    ]
    assert [p.credits for p in found[ai]] == [40, 30, 20]
