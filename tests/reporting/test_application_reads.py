"""The plain lines a dashboard reads instead of ORM objects (an application with its pools,
a pool's newest packs) carry what the ORM rows they stand for hold, on both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.access import Principal
from models.accounts import create_application, create_organization
from models.credits import CreditPack
from models.errors import NotFound
from models.ledger import purchase_credits
from models.pools import application_and_pools, newest_packs, pool_lines
from models.request_log import as_utc
from models.tenancy import ApiKeyRole, Application
from resolvers.context import Context
from resolvers.schema import schema
from tests.conftest import Backend
from tests.statement_counter import counting


async def _application(plan: str | None = None) -> int:
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    return (await create_application(organization.id, "reads", plan)).id


async def test_an_application_comes_with_its_pools(backend: Backend) -> None:
    app = await _application("pro")
    await purchase_credits(app, "ai", 500)
    read = await application_and_pools(app)
    line, pools = read.application, read.pools
    assert read.packs is None
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
    read = await application_and_pools(app, packs=3)
    ai, inbox = (pool.id for pool in read.pools)
    found = await newest_packs([ai, inbox], 3)
    assert read.packs == found
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


# Selections of packs under pools, as a client may send them: `application(id:)` reads the
# packs with the pools; `applications` (the same data, no such read) is the reference.
PACK_SELECTIONS = [
    "pools { key packs(first: 2) { id credits package expiresAt purchasedAt } }",
    "pools { key } ... on Application { pools { packs(first: 3) { credits } } }",
    "a: pools { packs(first: 1) { credits } } b: pools { key packs(first: 3) { credits } }",
    "pools { packs(first: 0) { credits } }",
    "pools { packs { credits unallocated used expired remaining reference } }",
    "...F",
    "pools { packs(first: 2) @include(if: true) { credits } }",
    "pools { packs(first: $n) { credits } }",
    "name pools { key }",
]
FRAGMENT = "fragment F on Application { pools { key packs(first: $n) { credits } } }"


async def _answer(organization_id: int, app: int, query: str, **variables: Any) -> Any:
    principal = Principal(
        organization_id=organization_id,
        application_id=app,
        role=ApiKeyRole.READ,
        api_key_id=None,
        key_id=None,
    )
    context = Context(request=None, response=None, principal=principal)
    result = await schema.execute(query, variable_values=variables, context_value=context)
    errors = [(e.message, (e.extensions or {}).get("code")) for e in result.errors or []]
    return result.data, errors


@pytest.mark.parametrize("selection", PACK_SELECTIONS)
async def test_packs_read_with_the_application_answer_as_read_alone(
    backend: Backend, selection: str
) -> None:
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "reads")).id
    for credits in (10, 20, 30, 40):
        await purchase_credits(app, "ai", credits, package=f"p{credits}")
    await purchase_credits(app, "inbox_preview", 5)
    fragment = FRAGMENT if "...F" in selection else ""
    uses_n = "$n" in selection + fragment
    n = ", $n: Int" if uses_n else ""
    one = f"query One($id: ID!{n}) {{ application(id: $id) {{ {selection} }} }} {fragment}"
    listed = f"query All{'($n: Int)' if uses_n else ''} {{ applications {{ {selection} }} }}"
    # sent twice: the second finds the pages its document decides as the first left them,
    # and reads a variable's again (here changed)
    for given in ({"n": 2}, {"n": 3}) if uses_n else ({}, {}):
        with counting() as statements:
            data, errors = await _answer(organization.id, app, one, id=str(app), **given)
        reference, reference_errors = await _answer(
            organization.id, app, listed + fragment, **given
        )
        assert errors == reference_errors == []
        assert data["application"] == reference["applications"][0]
        # the application with its pools and packs; a directive leaves the packs to their field
        assert len(statements) == (2 if "@" in selection else 1), statements


async def test_a_bad_packs_page_is_reported_as_when_read_alone(backend: Backend) -> None:
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "reads")).id
    selection = "pools { key packs(first: 501) { credits } }"
    one = f"query One($id: ID!) {{ application(id: $id) {{ {selection} }} }}"
    listed = f"query All {{ applications {{ {selection} }} }}"
    data, errors = await _answer(organization.id, app, one, id=str(app))
    _, reference_errors = await _answer(organization.id, app, listed)
    assert errors == reference_errors != []
    assert data is None or data["application"] is None or data["application"]["pools"] is None
