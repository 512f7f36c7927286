"""The fast completion of lists of plain objects (resolvers/runtime/plain_lists.py) answers exactly
what graphql-core's own completion answers: the same query runs on a schema with and one without
it, and data and errors must be equal, for aliases, `__typename`, fragments, enums, DateTime,
nulls, nested objects and lists, and for everything the fast path leaves to graphql-core
(resolvers, arguments, directives, awaitable values, values a type cannot serialize, nulls where
the type forbids them)."""

from __future__ import annotations

import gc
import json
import math
import weakref
from collections.abc import Awaitable
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import pytest
import strawberry

from resolvers.request_rules import RequestRules
from resolvers.runtime.plain_lists import PRELOADED, PlainListExecutor


@strawberry.enum
class Color(Enum):
    RED = "red"
    GREEN = "green"


@strawberry.type
class Leaf:
    id: strawberry.ID
    n: int
    label: str


@strawberry.type
class Item:
    id: strawberry.ID
    n: int
    ratio: float
    name: str
    flag: bool
    at: datetime
    color: Color
    maybe: int | None
    must: int
    leaf: Leaf
    leaves: list[Leaf]
    maybe_leaves: list[Leaf | None] | None
    stored: strawberry.Private[list[Leaf] | None] = None
    maybe_color: Color | None = None
    maybe_at: datetime | None = None

    @strawberry.field(metadata={PRELOADED: "stored"})
    def loaded(self) -> list[Leaf]:
        if self.stored is not None:
            return self.stored
        return [Leaf(id=strawberry.ID(f"R{self.n}"), n=self.n, label="resolved")]

    @strawberry.field
    def doubled(self) -> int:
        return self.n * 2

    @strawberry.field
    def times(self, k: int) -> int:
        return self.n * k

    @strawberry.field
    def broken(self) -> int:
        raise ValueError("broken resolver")

    @strawberry.field
    async def later(self) -> int:
        return self.n + 1


def _item(i: int, **changes: Any) -> Item:
    values: dict[str, Any] = {
        "id": strawberry.ID(f"I{i}"),
        "n": i,
        "ratio": i / 3,
        "name": f"item {i}",
        "flag": i % 2 == 0,
        "at": datetime(2026, 1, 1 + i, 12, 30, tzinfo=UTC),
        "color": Color.RED if i % 2 else Color.GREEN,
        "maybe": None if i % 3 == 0 else i,
        "must": i,
        "leaf": Leaf(id=strawberry.ID(f"L{i}"), n=i, label="x"),
        "leaves": [Leaf(id=strawberry.ID(f"L{i}.{j}"), n=j, label="y") for j in range(3)],
        "maybe_leaves": None if i == 1 else [None, Leaf(id=strawberry.ID("M"), n=1, label="m")],
        "maybe_color": None if i % 2 else Color.GREEN,
        "maybe_at": None if i % 2 == 0 else datetime(2026, 2, i, tzinfo=UTC),
    }
    values.update(changes)
    return Item(**values)


async def _coroutine_value() -> int:
    return 7


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item]:
        return [_item(i) for i in range(4)]

    @strawberry.field
    def nullable_items(self) -> list[Item | None]:
        return [_item(0), None, _item(2)]

    @strawberry.field
    def strict_items(self) -> list[Item]:
        return [_item(0), None, _item(2)]  # type: ignore[list-item]

    @strawberry.field
    def bad_values(self, case: int) -> list[Item]:
        bad = [
            {"must": None},  # null in a non-null field
            {"n": 2**40},  # beyond Int's 32 bits
            {"ratio": math.nan},  # not a finite Float
            {"maybe": "seven"},  # not an Int at all
            {"name": 7},  # not a String (graphql-core turns it into one)
            {"flag": 1},  # not a Boolean (graphql-core accepts it)
            {"color": "green"},  # an enum's value, not its member
            {"color": 3},  # not of the enum at all
            {"at": "2026-01-01"},  # not a datetime
            {"maybe_color": "RED", "maybe_at": datetime(2026, 3, 1)},  # a name; a naive one
        ][case]
        return [_item(0), _item(1, **bad), _item(2)]

    @strawberry.field
    def awaitable_values(self) -> list[Item]:
        value: Awaitable[int] = _coroutine_value()
        return [_item(0), _item(1, maybe=value)]

    @strawberry.field
    def preloaded_items(self, missing: int = -1) -> list[Item]:
        """Items whose `loaded` a list resolver filled, but for item `missing`."""
        return [
            _item(
                i,
                stored=None if i == missing else [Leaf(id=strawberry.ID(f"P{i}"), n=i, label="p")],
            )
            for i in range(4)
        ]

    @strawberry.field
    def one_item(self) -> Item:
        return _item(5)

    @strawberry.field
    def one_bad(self) -> Item | None:
        return _item(6, must=None)

    @strawberry.field
    def broken_sibling(self) -> int:
        raise ValueError("sibling failed")

    @strawberry.field
    async def helped(self, info: strawberry.Info) -> list[int]:
        """graphql-core's async helpers, as a resolver may use them."""
        helpers = info._raw_info.async_helpers
        helpers.track([_coroutine_value(), 1])  # settled in the background
        return await helpers.gather([_coroutine_value(), _coroutine_value()])


FAST = strawberry.Schema(query=Query, execution_context_class=PlainListExecutor)
NORMAL = strawberry.Schema(query=Query)

ALL_LEAVES = "id n ratio name flag at color maybe must maybeColor maybeAt"
QUERIES = {
    "leaves": f"{{ items {{ {ALL_LEAVES} }} }}",
    "aliases and typename": (
        "{ first: items { key: id typename: __typename __typename n again: n } }"
    ),
    "fragments": (
        "query { items { ...Parts ... on Item { color } } }"
        " fragment Parts on Item { id at leaf { ...LeafParts } }"
        " fragment LeafParts on Leaf { label __typename }"
    ),
    "nested": "{ items { leaf { id n } leaves { id n label } maybeLeaves { id } } }",
    "null items": f"{{ nullableItems {{ {ALL_LEAVES} }} }}",
    "null in a non-null list": "{ strictItems { id } }",
    "resolver": "{ items { id doubled } }",
    "arguments": "{ items { id times(k: 3) } }",
    "async resolver": "{ items { id later } }",
    "directive": "{ items { id n @include(if: false) name @skip(if: false) } }",
    "error in a resolver": "{ items { id broken } }",
    "error beside the list": "{ items { id n } brokenSibling }",
    **{
        f"values a type refuses or coerces ({case})": (
            f"{{ badValues(case: {case}) {{ id must n ratio maybe name flag color at"
            " maybeColor maybeAt } }"
        )
        for case in range(10)
    },
    "awaitable value": "{ awaitableValues { id maybe } }",
    "plain object": "{ oneItem { id n at color leaf { id n } leaves { id label } } }",
    "object with a resolver": "{ oneItem { id doubled leaf { n } } }",
    "object with a null where none may be": "{ oneBad { id must } }",
    "preloaded": "{ preloadedItems { id loaded { id n label } } }",
    "preloaded but one": "{ preloadedItems(missing: 2) { id loaded { id n label } } }",
    "preloaded field not preloaded": "{ items { id loaded { id label } } }",
    "async helpers": "{ helped items { id later } }",
}


def _errors(result: Any) -> list[tuple[str, list[Any] | None]]:
    return sorted((e.message, e.path) for e in result.errors or [])


@pytest.mark.parametrize("name", list(QUERIES))
async def test_fast_and_normal_completion_agree(name: str) -> None:
    query = QUERIES[name]
    fast = await FAST.execute(query)
    normal = await NORMAL.execute(query)
    assert fast.data == normal.data
    assert _errors(fast) == _errors(normal)


async def test_plain_lists_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    completed: list[int] = []
    original = PlainListExecutor._complete_items

    def spy(self: PlainListExecutor, items: Any, *args: Any) -> list[Any]:
        result = original(self, items, *args)
        completed.append(len(result))
        return result

    monkeypatch.setattr(PlainListExecutor, "_complete_items", spy)
    result = await FAST.execute(QUERIES["nested"])
    assert result.errors is None
    assert completed[-1] == 4  # the items (after their inner lists of leaves)
    assert result.data is not None and result.data["items"][0]["leaves"][2] == {
        "id": "L0.2",
        "n": 2,
        "label": "y",
    }
    completed.clear()
    await FAST.execute(QUERIES["resolver"])
    assert completed == []  # a resolver: graphql-core completes the list
    completed.clear()
    await FAST.execute(QUERIES["preloaded"])
    assert completed[-1] == 4  # a preloaded resolver field: read where the list put it
    completed.clear()
    await FAST.execute(QUERIES["preloaded but one"])
    assert 4 not in completed  # one item lacks it: graphql-core completes the list


async def test_serialized_values_are_the_types_own() -> None:
    result = await FAST.execute("{ items { at color ratio id } }")
    assert result.errors is None and result.data is not None
    first = result.data["items"][1]
    assert first == {"at": "2026-01-02T12:30:00+00:00", "color": "RED", "ratio": 1 / 3, "id": "I1"}


async def test_an_execution_leaves_no_reference_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Freed once done, not when the cyclic collector comes: graphql-core's async helpers
    are bound methods of the executor, which held every execution (root value, variables,
    collected fields) in a cycle (a WebSocket subscription left two behind)."""
    executors: list[weakref.ref[PlainListExecutor]] = []
    original = PlainListExecutor.__init__

    def tracked(self: PlainListExecutor, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        executors.append(weakref.ref(self))

    monkeypatch.setattr(PlainListExecutor, "__init__", tracked)
    gc.disable()  # what refcounting alone frees (enabling it may collect at once)
    try:
        for name in ("nested", "async helpers", "async resolver"):
            result = await FAST.execute(QUERIES[name])
            assert result.errors is None
        left = [ref() is not None for ref in executors]
    finally:
        gc.enable()
    assert left == [False, False, False]


def test_http_answers_are_encoded_as_json_whatever_the_values() -> None:
    from api.app import UsageGraphQL

    encode = UsageGraphQL.encode_json
    data = {"data": {"a": [1, 2.5, "é", None, True], "b": {"c": "2026-01-01T00:00:00+00:00"}}}
    assert json.loads(encode(None, data)) == data  # type: ignore[arg-type]
    huge = {"data": {"n": 2**70}}  # beyond orjson's 64 bits: encoded all the same
    assert json.loads(encode(None, huge)) == huge  # type: ignore[arg-type]


SHARED = strawberry.Schema(
    query=Query, execution_context_class=PlainListExecutor, extensions=[RequestRules]
)


async def test_plans_are_shared_by_executions_unless_variables_shape_the_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the parse cache (RequestRules), executions of one query text share their plans;
    not where @include or @skip lets the variables change which fields a group holds."""
    builds: list[str] = []
    original = PlainListExecutor._build_plan

    def counted(self: PlainListExecutor, object_type: Any, *args: Any) -> Any:
        builds.append(object_type.name)
        return original(self, object_type, *args)

    monkeypatch.setattr(PlainListExecutor, "_build_plan", counted)
    plain = "{ items { id leaf { n } leaves { label } } }"
    first = await SHARED.execute(plain)
    assert first.errors is None and builds
    built = len(builds)
    again = await SHARED.execute(plain)
    assert again.data == first.data == (await NORMAL.execute(plain)).data
    assert len(builds) == built  # the first execution's plans, shared

    shaped = "query($x: Boolean!) { items { id ... @include(if: $x) { name } leaf { n } } }"
    for x in (True, False, True):
        fast = await SHARED.execute(shaped, variable_values={"x": x})
        normal = await NORMAL.execute(shaped, variable_values={"x": x})
        assert fast.errors is None and fast.data == normal.data
        assert ("name" in fast.data["items"][0]) is x  # type: ignore[index]
