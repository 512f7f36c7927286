"""Kept End User pages (models/kept_pages.py): a page of an application's End Users read again
while nothing on it changed is answered from the kept copy after a short check, with its
burn values written for the moment of the read; every kind of change that can move what a
page shows makes the next read a fresh one. Each answer is compared with the general path's
(a stock Strawberry schema), which reads everything afresh."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import strawberry

from api.http_answer import encode_json
from models.access import Principal
from models.accounts import create_application, create_organization
from models.end_users import EndUserInput, upsert_end_users
from models.expiry import expire_lots
from models.ledger import allocate_credits, consume_credits, purchase_credits
from models.pools import create_pool
from models.references import EndUserRef
from models.rollups import fold_usage
from models.tenancy import ApiKeyRole
from resolvers.context import Context
from resolvers.runtime.versions import fast_paths_enabled
from resolvers.schema import Mutation, Query, Subscription, schema
from tests.conftest import Backend
from tests.ledger_helpers import balance_changes, move_expiry_to_past
from tests.statement_counter import planned_once

PAGE = """
query Page($id: ID!, $after: String) {
  application(id: $id) {
    endUsers(first: 4, after: $after) {
      totalCount pageInfo { hasNextPage endCursor }
      edges { node { externalId name email balances {
        pool allocated used remaining expired status lowBalanceThreshold
        burnRatePerDay projectedExhaustionAt
      } } }
    }
  }
}"""

STOCK = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)


def _kind(statement: str) -> str | None:
    if statement.startswith("WITH page AS") and " AS marker" in statement:
        return "check"
    if "x AS NOT MATERIALIZED" in statement and "end_user e" in statement:
        return "kept page" if " AS marker" in statement else "page"
    return None


class _Reader:
    """Reads PAGE as an HTTP request does and through the general path, at `now`."""

    def __init__(self, app: int, planned: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.app = app
        self.planned = planned
        self.monkeypatch = monkeypatch
        self.after: str | None = None  # the cursor of the page read
        self.at(datetime.now(UTC))

    def at(self, moment: datetime) -> None:
        """Every read from now on happens at `moment` (burn values, the window's start)."""
        self.now = moment

        class Frozen(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                return moment

        self.monkeypatch.setattr("resolvers.loaders.datetime", Frozen)

    async def _answer(self, each: strawberry.Schema, preserialized: bool) -> Any:
        principal = Principal(0, self.app, ApiKeyRole.READ, None, None)
        context = Context(None, None, principal, preserialized=preserialized)
        variables = {"id": str(self.app), "after": self.after}
        result = await each.execute(PAGE, variable_values=variables, context_value=context)
        assert result.errors is None, result.errors
        return orjson.loads(encode_json(result.data))

    async def read(self) -> list[str]:
        """Reads the page (asserting the answer is the general path's) and answers the
        statements the page took."""
        self.planned.clear()
        answer = await self._answer(schema, True)
        kinds = [kind for kind in map(_kind, self.planned) if kind is not None]
        assert answer == await self._answer(STOCK, False)
        self.answer = answer
        return kinds


async def _tenant() -> tuple[int, list[int]]:
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "kept")).id
    await purchase_credits(app, "ai", 10_000)
    await purchase_credits(app, "inbox_preview", 1_000)
    rows = await upsert_end_users(app, [EndUserInput(f"k{i}", f"K {i}") for i in range(6)])
    ids = [row.id for row in rows]
    for i, end_user in enumerate(ids[:5]):
        await allocate_credits(app, "ai", EndUserRef(id=end_user), 100 + 10 * i)
        await consume_credits(app, "ai", EndUserRef(id=end_user), 7 * (i + 1), "ai_generation")
    await allocate_credits(app, "inbox_preview", EndUserRef(id=ids[1]), 30)
    await fold_usage()
    return app, ids


async def test_a_kept_page_is_read_afresh_after_every_kind_of_change(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("models.kept_pages.BUSY_SECONDS", 0.0)  # each change read alike
    app, ids = await _tenant()
    reader = _Reader(app, planned_once(monkeypatch), monkeypatch)
    kept = backend.postgres and fast_paths_enabled()

    def one(user: int) -> EndUserRef:
        return EndUserRef(id=ids[user])

    expiring: list[int] = []

    async def pack_to_expire() -> None:
        later = datetime.now(UTC) + timedelta(days=1)
        expiring.append((await purchase_credits(app, "soon", 100, expires_at=later)).pack_id)

    async def expired() -> None:
        await move_expiry_to_past(expiring[0])
        assert (await expire_lots()).lots == 1

    changes = {
        **balance_changes(app, ids),
        "new pool": lambda: create_pool(app, "soon", "Soon"),
        "pack to expire": pack_to_expire,
        "allocate from it": lambda: allocate_credits(app, "soon", one(0), 60),
        "expiry": expired,
        "rename": lambda: upsert_end_users(app, [EndUserInput("k2", "Renamed", "k2@x.test")]),
        "same name again": lambda: upsert_end_users(app, [EndUserInput("k2", "Renamed")]),
        "a new End User": lambda: upsert_end_users(app, [EndUserInput("k9")]),
        "fold": fold_usage,
    }
    for name, change in changes.items():
        await reader.read()
        settled = await reader.read()
        if kept:  # nothing changed: the check alone, the page as kept
            assert settled == ["check"], (name, settled)
        await change()
        after = await reader.read()
        if kept:  # the check finds the change: the page read afresh, with its marker (and
            # its burn values written by a check when it is kept: nothing else changing)
            assert after[:2] == ["check", "kept page"] and len(after) <= 3, (name, after)
        await fold_usage()
    # later in the hour, nothing changed: the kept page's burn values are the moment's
    await reader.read()
    settled = await reader.read()
    hour_end = reader.now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    reader.at(reader.now + (hour_end - reader.now) / 2)
    later = await reader.read()
    if kept:
        assert settled == later == ["check"], (settled, later)


async def test_a_page_that_keeps_changing_is_read_in_one_statement(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page found changing is read without its marker for a while: under a stream of
    writes a kept copy would never be read again."""
    app, ids = await _tenant()
    reader = _Reader(app, planned_once(monkeypatch), monkeypatch)
    await consume_credits(app, "ai", EndUserRef(id=ids[0]), 1, "ai_generation")
    first = await reader.read()
    for n in range(3):
        await consume_credits(app, "ai", EndUserRef(id=ids[n]), 1, "ai_generation")
        again = await reader.read()
        if backend.postgres and fast_paths_enabled():
            assert first == ["kept page"] and again == ["page"], (first, again)
    await asyncio.sleep(1.1)  # (`models.kept_pages.BUSY_SECONDS`)
    await fold_usage()
    tried = await reader.read()
    kept = await reader.read()
    if backend.postgres and fast_paths_enabled():
        assert tried[:1] == ["kept page"] and kept == ["check"], (tried, kept)


async def test_a_page_after_a_cursor_is_kept_as_its_own_end_users_stand(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second page (End Users k4 and k5 of k0-k5) is kept apart from the first: a change
    to an End User of the first page leaves it kept, one of its own or an End User joining
    it reads it afresh."""
    monkeypatch.setattr("models.kept_pages.BUSY_SECONDS", 0.0)
    app, _ = await _tenant()
    reader = _Reader(app, planned_once(monkeypatch), monkeypatch)
    kept = backend.postgres and fast_paths_enabled()
    await reader.read()
    reader.after = reader.answer["application"]["endUsers"]["pageInfo"]["endCursor"]
    await reader.read()
    edges = reader.answer["application"]["endUsers"]["edges"]
    assert [edge["node"]["externalId"] for edge in edges] == ["k4", "k5"]
    steps = {
        "nothing": (None, ["check"]),
        "an End User of the first page": ("k0", ["check"]),
        "one of its own": ("k5", ["check", "kept page", "check"]),
        "a newcomer": ("k6", ["check", "kept page", "check"]),
    }
    for name, (external_id, expected) in steps.items():
        settled = await reader.read()
        if kept:
            assert settled == ["check"], (name, settled)
        if external_id is not None:
            await upsert_end_users(app, [EndUserInput(external_id, f"{name} renamed")])
        found = await reader.read()
        if kept:
            assert found == expected, (name, found)
    edges = reader.answer["application"]["endUsers"]["edges"]
    assert [edge["node"]["externalId"] for edge in edges] == ["k4", "k5", "k6"]
