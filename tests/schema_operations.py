"""GraphQL operations built from the schema itself, so that the isolation matrix and the limit
tests cover every field, including the ones added after they were written.

Argument values are built from their types; the arguments that name an object (an
application, an End User, a pool, an alert, an API key) are found by the tables below and
filled with the objects of the test's choosing. A field the builder cannot fill (an `ID`
nobody mapped, a custom scalar without a value) raises `GeneratorGap`, which the tests turn
into a failure: nothing is skipped silently."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import graphql
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
)

from resolvers.schema import schema_sdl

# Which kind of object an argument or input field names, by its coordinate
# (`Type.field(arg:)` for an argument, `Input.field` for an input field) ...
REFERENCE_COORDINATES: dict[str, str] = {
    "Query.application(id:)": "application",
    "Mutation.revokeApiKey(id:)": "api_key",
    "Mutation.acknowledgeAlert(id:)": "alert",
    "Application.endUser(id:)": "end_user",
    "Application.endUser(externalId:)": "external_id",
    "Application.pool(key:)": "pool",
    "EndUserRef.id": "end_user",
    "EndUserRef.externalId": "external_id",
    "UpdateWebhookEndpointInput.id": "webhook_endpoint",
    "Mutation.disableWebhookEndpoint(id:)": "webhook_endpoint",
    "Mutation.deleteWebhookEndpoint(id:)": "webhook_endpoint",
    "Mutation.rotateWebhookSecret(id:)": "webhook_endpoint",
    "Mutation.sendTestWebhook(id:)": "webhook_endpoint",
    "Mutation.redeliverWebhook(id:)": "webhook_delivery",
}
# ... and otherwise by its name, wherever it appears.
REFERENCE_NAMES: dict[str, str] = {
    "applicationId": "application",
    "endUserId": "end_user",
    "endUser": "end_user",
    "externalId": "external_id",
    "endUserExternalId": "external_id",
    "pool": "pool",
    "poolKey": "pool",
    "alertId": "alert",
    "apiKeyId": "api_key",
    "apiKeyPrefix": "key_prefix",
    "keyId": "key_prefix",
}
# Fields named like a reference that give a new value instead (an End User's own externalId
# in an upsert is not a reference to an existing one).
NOT_REFERENCES = {"EndUserInput.externalId"}
# Arguments and input objects that take exactly one of their references: one operation is
# built for each of them.
ONE_OF = {"EndUserRef", "Application.endUser"}

NOW = datetime.now(UTC).replace(microsecond=0)
# Values for required arguments that name nothing, by name, then by type.
VALUES_BY_NAME: dict[str, object] = {
    "from": (NOW - timedelta(days=7)).isoformat(),
    "to": (NOW + timedelta(days=1)).isoformat(),
    "start": NOW.replace(day=1, hour=0, minute=0, second=0).isoformat(),
    "first": 1,
    "credits": 1,
    "ttlSeconds": 60,
    "threshold": 1,
}
VALUES_BY_TYPE: dict[str, object] = {
    "Int": 1,
    "Float": 1.0,
    "String": "probe",
    "Boolean": False,
    "DateTime": NOW.isoformat(),
    "Date": NOW.date().isoformat(),
    "JSON": {},
}
MAX_INPUT_DEPTH = 5


class GeneratorGap(Exception):
    """A field or argument the builder cannot fill: map it in the tables above."""


@cache
def sdl_schema() -> GraphQLSchema:
    """The schema as clients see it (the exported SDL)."""
    return graphql.build_schema(schema_sdl())


def named(type_: Any) -> Any:
    return graphql.get_named_type(type_)


@dataclass
class Operation:
    """One document with its variables; `path` is where the probed field's value lands."""

    coordinate: str
    kind: str  # query | mutation | subscription
    document: str
    variables: dict[str, Any]
    path: tuple[str, ...]
    references: frozenset[str] = field(default_factory=frozenset)


@dataclass
class _Arguments:
    """Builds argument values, recording the variable definitions it needs."""

    objects: Mapping[str, object]
    choice: Mapping[str, str]  # one-of container -> the member to fill
    definitions: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    one_ofs: dict[str, list[str]] = field(default_factory=dict)

    def render(
        self,
        owner: str,
        args: Mapping[str, GraphQLArgument],
        overrides: Mapping[str, object] | None = None,
    ) -> str:
        """`(name: $v0, ...)` for the arguments that must or should be given."""
        rendered = []
        for name, argument in args.items():
            coordinate = f"{owner}({name}:)"
            if overrides and name in overrides:
                value = overrides[name]
            elif owner in ONE_OF and not self._chosen(owner, name, args):
                continue
            else:
                required = graphql.is_required_argument(argument)
                value = self.value(coordinate, name, argument.type, required)
            if value is _OMIT:
                continue
            variable = f"v{len(self.definitions)}"
            self.definitions.append(f"${variable}: {argument.type}")
            self.variables[variable] = value
            rendered.append(f"{name}: ${variable}")
        return f"({', '.join(rendered)})" if rendered else ""

    def _chosen(self, owner: str, name: str, members: Mapping[str, Any]) -> bool:
        refs = [
            m
            for m in members
            if self.reference(f"{owner}({m}:)", m) or self.reference(f"{owner}.{m}", m)
        ]
        if name not in refs:
            return True
        self.one_ofs.setdefault(owner, refs)
        return self.choice.get(owner, refs[0]) == name

    @staticmethod
    def reference(coordinate: str, name: str) -> str | None:
        if coordinate in NOT_REFERENCES:
            return None
        return REFERENCE_COORDINATES.get(coordinate) or REFERENCE_NAMES.get(name)

    def value(self, coordinate: str, name: str, type_: Any, required: bool, depth: int = 0) -> Any:
        inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
        if isinstance(inner, GraphQLList):
            item = self.value(coordinate, name, inner.of_type, True, depth)
            return _OMIT if item is _OMIT else [item]
        kind = self.reference(coordinate, name)
        if isinstance(inner, GraphQLScalarType | GraphQLEnumType) and kind is not None:
            if kind not in self.objects:
                raise GeneratorGap(f"{coordinate}: no object of kind {kind!r} to name")
            self.used.add(kind)
            return self.objects[kind]
        if isinstance(inner, GraphQLInputObjectType):
            if not required and not contains_reference(inner):
                return _OMIT
            return self.input_object(inner, depth + 1)
        if isinstance(inner, GraphQLScalarType) and inner.name == "ID":
            raise GeneratorGap(f"{coordinate} is an ID naming nothing known: map it")
        if not required:
            return _OMIT
        if isinstance(inner, GraphQLEnumType):
            return next(iter(inner.values))
        if name in VALUES_BY_NAME:
            return VALUES_BY_NAME[name]
        if inner.name in VALUES_BY_TYPE:
            return VALUES_BY_TYPE[inner.name]
        raise GeneratorGap(f"{coordinate}: no value for the scalar {inner.name}")

    def input_object(self, type_: GraphQLInputObjectType, depth: int) -> dict[str, Any]:
        if depth > MAX_INPUT_DEPTH:
            raise GeneratorGap(f"{type_.name} nests deeper than {MAX_INPUT_DEPTH} inputs")
        built = {}
        for name, input_field in type_.fields.items():
            if type_.name in ONE_OF and not self._chosen(type_.name, name, type_.fields):
                continue
            value = self.value(
                f"{type_.name}.{name}",
                name,
                input_field.type,
                graphql.is_required_input_field(input_field),
                depth,
            )
            if value is not _OMIT:
                built[name] = value
        return built


_OMIT = object()


@cache
def contains_reference(type_: GraphQLInputObjectType, depth: int = 0) -> bool:
    if depth > MAX_INPUT_DEPTH:
        return False
    for name, input_field in type_.fields.items():
        inner = named(input_field.type)
        if _Arguments.reference(f"{type_.name}.{name}", name):
            return True
        if isinstance(inner, GraphQLInputObjectType) and contains_reference(inner, depth + 1):
            return True
    return False


def field_references(owner: str, definition: GraphQLField) -> set[str]:
    """The kinds of object the field's arguments can name."""
    kinds: set[str] = set()

    def walk(coordinate: str, name: str, type_: Any, depth: int) -> None:
        kind = _Arguments.reference(coordinate, name)
        inner = named(type_)
        if kind and not isinstance(inner, GraphQLInputObjectType):
            kinds.add(kind)
        if isinstance(inner, GraphQLInputObjectType) and depth <= MAX_INPUT_DEPTH:
            for child, input_field in inner.fields.items():
                walk(f"{inner.name}.{child}", child, input_field.type, depth + 1)

    for name, argument in definition.args.items():
        walk(f"{owner}({name}:)", name, argument.type, 0)
    return kinds


def selection(type_: Any, depth: int = 3) -> str:
    """Every field without required arguments, `depth` object levels deep."""
    inner = named(type_)
    if not isinstance(inner, GraphQLObjectType):
        if isinstance(inner, GraphQLInterfaceType | GraphQLUnionType):
            return "{ __typename }"
        return ""
    parts = ["__typename"]
    for name, definition in inner.fields.items():
        if any(graphql.is_required_argument(a) for a in definition.args.values()):
            continue
        if isinstance(
            named(definition.type), GraphQLObjectType | GraphQLInterfaceType | GraphQLUnionType
        ):
            if depth > 0:
                parts.append(f"{name} {selection(definition.type, depth - 1)}")
        else:
            parts.append(name)
    return "{ " + " ".join(parts) + " }"


def root_fields(kind: str) -> dict[str, GraphQLField]:
    """The fields of the root type of `kind` (query, mutation or subscription)."""
    schema = sdl_schema()
    root = {
        "query": schema.query_type,
        "mutation": schema.mutation_type,
        "subscription": schema.subscription_type,
    }[kind]
    return dict(root.fields) if root is not None else {}


def application_fields() -> dict[str, GraphQLField]:
    return dict(sdl_schema().get_type("Application").fields)  # type: ignore[union-attr]


Step = tuple[str, str]  # (type name, field name)


def operations(
    kind: str,
    steps: list[Step],
    objects: Mapping[str, object],
    overrides: Mapping[str, object] | None = None,
) -> Iterator[Operation]:
    """Operations reaching the last of `steps` (the first is a root field of `kind`), one
    per choice of the one-of arguments. Arguments naming objects get `objects[kind]`; the
    last field's arguments in `overrides` get those values."""
    schema = sdl_schema()
    seen: set[str] = set()
    pending: list[dict[str, str]] = [{}]
    while pending:
        choice = pending.pop()
        arguments = _Arguments(objects, choice)
        body = ""
        definition: GraphQLField | None = None
        for position, (owner, name) in enumerate(steps):
            definition = schema.get_type(owner).fields[name]  # type: ignore[union-attr]
            last = position == len(steps) - 1
            rendered = arguments.render(
                f"{owner}.{name}", definition.args, overrides if last else None
            )
            body += f"{name}{rendered} " + ("" if last else "{ ")
        assert definition is not None
        body += selection(definition.type) + " }" * (len(steps) - 1)
        for container, members in arguments.one_ofs.items():
            if container not in choice:
                pending.extend({**choice, container: m} for m in members[1:])
        header = f"({', '.join(arguments.definitions)})" if arguments.definitions else ""
        document = f"{kind} Probe{header} {{ {body.strip()} }}"
        key = document + json.dumps(arguments.variables, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        yield Operation(
            coordinate=".".join(steps[-1]),
            kind=kind,
            document=document,
            variables=arguments.variables,
            path=tuple(name for _, name in steps),
            references=frozenset(arguments.used),
        )


def fields_with_argument(argument: str) -> list[tuple[list[tuple[str, str]], GraphQLField]]:
    """Every object field taking `argument`, with a path from `Query.application` to it
    (a list of (type, field) steps), breadth first; fields not reachable from Application
    are returned with the path from Query."""
    schema = sdl_schema()
    found: list[tuple[list[tuple[str, str]], GraphQLField]] = []
    start: list[tuple[list[tuple[str, str]], GraphQLObjectType]] = [([], schema.query_type)]  # type: ignore[list-item]
    visited: set[str] = set()
    while start:
        path, type_ = start.pop(0)
        if type_.name in visited:
            continue
        visited.add(type_.name)
        for name, definition in type_.fields.items():
            step = [*path, (type_.name, name)]
            if argument in definition.args:
                found.append((step, definition))
            inner = named(definition.type)
            if isinstance(inner, GraphQLObjectType):
                start.append((step, inner))
    return found


def input_fields_named(predicate: Callable[[GraphQLInputField], bool]) -> list[str]:
    """Coordinates of input fields matching `predicate`."""
    schema = sdl_schema()
    return [
        f"{type_.name}.{name}"
        for type_ in schema.type_map.values()
        if isinstance(type_, GraphQLInputObjectType) and not type_.name.startswith("__")
        for name, input_field in type_.fields.items()
        if predicate(input_field)
    ]


def known_coordinates() -> set[str]:
    """Every `Type.field`, `Type.field(arg:)` and `Input.field` of the schema."""
    schema = sdl_schema()
    coordinates: set[str] = set()
    for type_ in schema.type_map.values():
        if type_.name.startswith("__"):
            continue
        if isinstance(type_, GraphQLObjectType | GraphQLInterfaceType):
            for name, definition in type_.fields.items():
                coordinates.add(f"{type_.name}.{name}")
                coordinates.update(f"{type_.name}.{name}({a}:)" for a in definition.args)
        elif isinstance(type_, GraphQLInputObjectType):
            coordinates.update(f"{type_.name}.{name}" for name in type_.fields)
            coordinates.add(type_.name)
    return coordinates


__all__ = ["GeneratorGap", "Operation"]
