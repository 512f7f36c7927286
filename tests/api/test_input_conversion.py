"""Compiled input conversion (resolvers/runtime/input_conversion.py) builds exactly what
Strawberry's own conversion builds: the same inputs converted before and after `install`, for
nested and listed inputs, nulls, omitted fields, defaults, enums, DateTime and ID, with lists
copied (graphql-core shares default values between requests)."""

from __future__ import annotations

from dataclasses import field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.types.arguments import convert_argument

from resolvers.runtime.input_conversion import install
from resolvers.schema import schema as real_schema


@strawberry.enum
class Shade(Enum):
    DARK = "dark"
    LIGHT = "light"


@strawberry.input
class Inner:
    a: int
    b: str | None = None
    tags: list[str] = field(default_factory=list)


@strawberry.input
class Outer:
    id: strawberry.ID
    shade: Shade
    inner: Inner
    inners: list[Inner]
    nums: list[int]
    when: datetime | None = None
    maybe_inner: Inner | None = None
    sparse: list[Inner | None] | None = None
    with_default: int = 5
    no_default: str | None


@strawberry.type
class Query:
    @strawberry.field
    def take(self, value: Outer) -> int:
        return 1


SCHEMA = strawberry.Schema(query=Query)
WHEN = datetime(2026, 11, 25, 12, tzinfo=UTC)
VALUES: list[dict[str, Any]] = [
    {"id": "1", "shade": Shade.DARK, "inner": {"a": 1}, "inners": [], "nums": []},
    {
        "id": "2",
        "shade": Shade.LIGHT,
        "inner": {"a": 2, "b": None, "tags": ["x", "y"]},
        "inners": [{"a": 3, "b": "three"}, {"a": 4, "tags": []}],
        "nums": [1, 2, 3],
        "when": WHEN,
        "maybeInner": {"a": 5},
        "sparse": [None, {"a": 6}],
        "withDefault": 7,
        "noDefault": "given",
    },
    {
        "id": "3",
        "shade": Shade.DARK,
        "inner": {"a": 0},
        "inners": [{"a": 1}],
        "nums": [0],
        "when": None,
        "maybeInner": None,
        "sparse": None,
        "noDefault": None,
    },
]


def _convert(value: dict[str, Any], type_: Any, schema: strawberry.Schema) -> Any:
    return convert_argument(value, type_, schema.schema_converter.scalar_registry, schema.config)


def test_compiled_conversion_builds_what_strawberry_builds() -> None:
    expected = [_convert(value, Outer, SCHEMA) for value in VALUES]
    assert Outer.__strawberry_definition__.from_input is None
    install(SCHEMA)
    assert Outer.__strawberry_definition__.from_input is not None
    assert Inner.__strawberry_definition__.from_input is not None
    actual = [_convert(value, Outer, SCHEMA) for value in VALUES]
    assert actual == expected
    assert actual[1].nums == VALUES[1]["nums"] and actual[1].nums is not VALUES[1]["nums"]
    assert actual[1].inner.tags is not VALUES[1]["inner"]["tags"]


def test_the_schema_compiles_every_input_type() -> None:
    inputs = [
        concrete.definition
        for concrete in real_schema.schema_converter.type_map.values()
        if getattr(concrete.definition, "is_input", False)
    ]
    assert inputs and all(definition.from_input is not None for definition in inputs)
