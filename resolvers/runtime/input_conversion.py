"""Input objects built by a converter compiled once per type (`install`), instead of
Strawberry's generic conversion, which resolves every field's type and GraphQL name again on
each request (a tenth of a `consumeCredits` request).

It is Strawberry's documented hook (`StrawberryObjectDefinition.from_input`) and builds the
same value: fields without a default start as None, every field present in the input is
converted (scalars and enums as graphql-core parsed them, lists copied, nested inputs by
their own converter), and the class is called with them. Types it does not know (Maybe,
GlobalID, lazy or generic types) go to Strawberry's own conversion (`InputContext.convert`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from strawberry.relay.types import GlobalID
from strawberry.scalars import is_scalar
from strawberry.schema import Schema
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    has_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition

Convert = Callable[[Any, InputContext], Any]


def _same(value: Any, _: InputContext) -> Any:
    return value


def _copied(value: Any, _: InputContext) -> Any:
    return list(value)


def _converter(type_: Any, key: str, registry: Mapping[object, Any]) -> Convert:
    if isinstance(type_, StrawberryMaybe):
        return lambda value, ctx: ctx.convert(value, type_, key)
    if isinstance(type_, StrawberryOptional):
        inner = _converter(type_.of_type, key, registry)
        return lambda value, ctx: None if value is None else inner(value, ctx)
    if type_ is GlobalID:
        return lambda value, ctx: ctx.convert(value, type_, key)
    if is_scalar(type_, registry) or isinstance(type_, StrawberryEnumDefinition):
        return _same
    if isinstance(type_, StrawberryList):
        item = _converter(type_.of_type, key, registry)
        if item is _same:
            return _copied  # a copy: graphql-core shares default values between requests
        return lambda value, ctx: [None if v is None else item(v, ctx) for v in value]
    if has_object_definition(type_) and type_.__strawberry_definition__.is_input:
        nested = type_.__strawberry_definition__

        def convert(value: Any, ctx: InputContext) -> Any:
            if nested.from_input is not None:  # compiled too (ours ignore ctx.path)
                return nested.from_input(type_, value, ctx)
            return ctx.convert(value, type_, key)

        return convert
    return lambda value, ctx: ctx.convert(value, type_, key)


def _compile(
    definition: StrawberryObjectDefinition, schema: Schema
) -> Callable[[type, Mapping[str, Any], InputContext], Any]:
    registry = schema.schema_converter.scalar_registry
    unset = [
        field.python_name
        for field in definition.fields
        if field.default_value is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    fields = [
        (
            name,
            field.python_name,
            _converter(field.resolve_type(type_definition=definition), name, registry),
        )
        for field in definition.fields
        for name in (schema.config.name_converter.from_field(field),)
    ]

    def from_input(cls: type, value: Mapping[str, Any], ctx: InputContext) -> Any:
        kwargs: dict[str, Any] = dict.fromkeys(unset)
        for name, python_name, convert in fields:
            if name in value:
                kwargs[python_name] = convert(value[name], ctx)
        return cls(**kwargs)

    return from_input


def _has_maybe(definition: StrawberryObjectDefinition) -> bool:
    # Strawberry validates a Maybe field's null in the document only for types without
    # `from_input`: those keep Strawberry's conversion
    return any(
        isinstance(field.resolve_type(type_definition=definition), StrawberryMaybe)
        for field in definition.fields
    )


def install(schema: Schema) -> None:
    """Gives every input type of the schema without its own `from_input` (or a Maybe field)
    the compiled one."""
    definitions = [
        concrete.definition
        for concrete in schema.schema_converter.type_map.values()
        if isinstance(concrete.definition, StrawberryObjectDefinition)
        and concrete.definition.is_input
        and concrete.definition.from_input is None
        and not _has_maybe(concrete.definition)
    ]
    for definition in definitions:
        definition.from_input = _compile(definition, schema)
