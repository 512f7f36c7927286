"""Every string a client sends has a bound: a 600,000-character value given to any string
argument or input field of the schema (generated from it, written in the document or sent
as a variable) is refused before execution with a VALIDATION error quoting a short prefix;
a value at its bound passes these rules. Names, enum values and syntax errors quoting a
long token are bounded too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import graphql
import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
)

from resolvers.input_rules import MAX_DOCUMENT, MAX_STRING, string_bound
from resolvers.request_rules import MAX_MESSAGE
from tests.schema_operations import NOW, named, sdl_schema
from tests.subscribing import initialised, receive, send, socket

HUGE = 600_000
LONG_LITERAL = 5_000  # beyond every bound, within a document's
STRINGS = {"String", "ID", "DateTime"}  # scalars whose values are strings
DUMMIES: dict[str, Any] = {
    "String": "x",
    "ID": "1",
    "DateTime": NOW.isoformat(),
    "Int": 1,
    "Float": 1.0,
    "Boolean": False,
}
SHORT_MESSAGE = 200
# The bounds are enforced before execution, where the backend plays no part: one backend
# (SQLite, which every run has) checks them.
ONE_BACKEND = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@dataclass(frozen=True)
class Target:
    """One string position: in argument `argument` of the last of `steps`, at `inside`
    (input field names; a list is entered at its one item)."""

    coordinate: str
    kind: str
    steps: tuple[tuple[str, str], ...]
    argument: str
    inside: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.inside[-1] if self.inside else self.argument


def _roots() -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    """The shortest way from a root field to every object type: (kind, steps)."""
    schema = sdl_schema()
    found: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
    pending: list[tuple[str, GraphQLObjectType, tuple[tuple[str, str], ...]]] = [
        (kind, root, ())
        for kind, root in (
            ("query", schema.query_type),
            ("mutation", schema.mutation_type),
            ("subscription", schema.subscription_type),
        )
        if root is not None
    ]
    while pending:
        kind, type_, steps = pending.pop(0)
        if type_.name in found:
            continue
        found[type_.name] = (kind, steps)
        for name, definition in type_.fields.items():
            inner = named(definition.type)
            if isinstance(inner, GraphQLObjectType) and kind != "subscription":
                pending.append((kind, inner, (*steps, (type_.name, name))))
    return found


def _positions(type_: Any, inside: tuple[str, ...], depth: int = 0):
    """(input field path, coordinate) of every string position within `type_`."""
    inner = named(type_)
    if isinstance(inner, GraphQLScalarType) and inner.name in STRINGS:
        yield inside, None
    elif isinstance(inner, GraphQLInputObjectType) and depth < 5:
        for name, input_field in inner.fields.items():
            for path, coordinate in _positions(input_field.type, (*inside, name), depth + 1):
                yield path, coordinate or f"{inner.name}.{name}"


def targets() -> list[Target]:
    found: list[Target] = []
    seen: set[str] = set()
    schema = sdl_schema()
    for type_name, (kind, steps) in _roots().items():
        owner = schema.get_type(type_name)
        for field_name, definition in owner.fields.items():  # type: ignore[union-attr]
            for argument, given in definition.args.items():
                for inside, input_coordinate in _positions(given.type, ()):
                    coordinate = input_coordinate or f"{type_name}.{field_name}({argument}:)"
                    if coordinate in seen:
                        continue
                    seen.add(coordinate)
                    path = (*steps, (type_name, field_name))
                    found.append(Target(coordinate, kind, path, argument, inside))
    return found


def _dummy(type_: Any) -> Any:
    if isinstance(type_, GraphQLNonNull):
        return _dummy(type_.of_type)
    if isinstance(type_, GraphQLList):
        return [_dummy(type_.of_type)]
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        return {
            name: _dummy(f.type)
            for name, f in type_.fields.items()
            if graphql.is_required_input_field(f)
        }
    return DUMMIES[type_.name]


def _with(value: Any, type_: Any, inside: tuple[str, ...], text: str) -> Any:
    """`value` of `type_` with the string at `inside` replaced by `text`."""
    inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    if isinstance(inner, GraphQLList):
        return [_with(_dummy(inner.of_type), inner.of_type, inside, text)]
    if not inside:
        return text
    assert isinstance(inner, GraphQLInputObjectType)
    name = inside[0]
    field_type = inner.fields[name].type
    base = value.get(name) if isinstance(value, dict) else None
    child = base if base is not None else _dummy(field_type)
    return {**(value or {}), name: _with(child, field_type, inside[1:], text)}


def _literal(value: Any, type_: Any) -> str:
    inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    if isinstance(inner, GraphQLList):
        return "[" + ", ".join(_literal(item, inner.of_type) for item in value) + "]"
    if isinstance(inner, GraphQLEnumType):
        return value
    if isinstance(inner, GraphQLInputObjectType):
        fields = (f"{k}: {_literal(v, inner.fields[k].type)}" for k, v in value.items())
        return "{" + ", ".join(fields) + "}"
    return json.dumps(value)


def request(target: Target, text: str, *, literal: bool) -> dict[str, Any]:
    """A valid document reaching the target, its required arguments filled."""
    schema = sdl_schema()
    definitions: list[str] = []
    variables: dict[str, Any] = {}
    body = ""
    for position, (owner, field_name) in enumerate(target.steps):
        definition = schema.get_type(owner).fields[field_name]  # type: ignore[union-attr]
        last = position == len(target.steps) - 1
        rendered = []
        for argument, given in definition.args.items():
            if last and argument == target.argument:
                value = _with(_dummy(given.type), given.type, target.inside, text)
            elif graphql.is_required_argument(given):
                value = _dummy(given.type)
            else:
                continue
            if literal:
                rendered.append(f"{argument}: {_literal(value, given.type)}")
            else:
                variable = f"v{len(definitions)}"
                definitions.append(f"${variable}: {given.type}")
                variables[variable] = value
                rendered.append(f"{argument}: ${variable}")
        arguments = f"({', '.join(rendered)})" if rendered else ""
        inner = named(definition.type)
        tail = "" if isinstance(inner, GraphQLScalarType | GraphQLEnumType) else "{ __typename }"
        body += f"{field_name}{arguments} " + (tail if last else "{ ")
    body += " }" * (len(target.steps) - 1)
    header = f"({', '.join(definitions)})" if definitions else ""
    return {"query": f"{target.kind} Probe{header} {{ {body} }}", "variables": variables}


TARGETS = targets()


def test_the_generator_reaches_every_kind_of_string_input() -> None:
    coordinates = {target.coordinate for target in TARGETS}
    assert {
        "ConsumeCreditsInput.pool",
        "ConsumeCreditsInput.idempotencyKey",
        "EndUserInput.externalId",
        "Application.pool(key:)",
        "Mutation.exchangeTemporaryCode(code:)",
        "RequestLogFilter.endpoint",
    } <= coordinates
    assert len(TARGETS) >= 40


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


@pytest.fixture
def post(server, http: httpx.AsyncClient) -> Callable[[dict[str, Any]], Awaitable[httpx.Response]]:
    """POSTs a request with the server's organization key."""

    async def send(payload: dict[str, Any]) -> httpx.Response:
        headers = {"authorization": f"Bearer {server.organization_key}"}
        return await http.post(server.graphql, json=payload, headers=headers)

    return send


def _refusal(response: httpx.Response) -> str:
    """The one VALIDATION error of a request refused before execution: its message."""
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "VALIDATION"
    assert len(error["message"]) < SHORT_MESSAGE, error["message"][:500]
    assert len(response.content) < 1_000
    return error["message"]


@ONE_BACKEND
@pytest.mark.parametrize(
    ("literal", "length"),
    [(False, HUGE), (True, LONG_LITERAL)],
    ids=["variable", "literal"],
)
@pytest.mark.parametrize("target", TARGETS, ids=[t.coordinate for t in TARGETS])
async def test_a_long_string_is_refused_with_a_short_message(
    post, target: Target, literal: bool, length: int
) -> None:
    message = _refusal(await post(request(target, "a" * length, literal=literal)))
    bound = string_bound(target.name)
    assert f"{target.name} may be at most {bound:,} characters, got {length:,}" in message


@ONE_BACKEND
@pytest.mark.parametrize("target", TARGETS, ids=[t.coordinate for t in TARGETS])
async def test_a_huge_literal_is_refused_unparsed(post, target: Target) -> None:
    message = _refusal(await post(request(target, "a" * HUGE, literal=True)))
    assert message.startswith(f"the document may be at most {MAX_DOCUMENT:,} characters")


@ONE_BACKEND
@pytest.mark.parametrize("target", TARGETS, ids=[t.coordinate for t in TARGETS])
async def test_a_string_at_its_bound_passes_the_bound(post, target: Target) -> None:
    response = await post(request(target, "7" * string_bound(target.name), literal=False))
    errors = response.json().get("errors") or []
    assert not [e for e in errors if "characters, got" in e["message"]], errors


@ONE_BACKEND
@pytest.mark.parametrize(
    "document",
    [
        "{ " + "n" * LONG_LITERAL + " }",  # a field name
        '{ application(id: "1") { endUsers(orderBy: {field: '
        + "N" * LONG_LITERAL
        + "}) { __typename } } }",
        "query($a: String = " + json.dumps("d" * LONG_LITERAL) + ") { __typename }",
    ],
    ids=["field name", "enum value", "default value"],
)
async def test_long_names_and_values_anywhere_are_refused(post, document: str) -> None:
    message = _refusal(await post({"query": document}))
    assert f"may be at most {MAX_STRING:,} characters, got {LONG_LITERAL:,}" in message


@ONE_BACKEND
async def test_no_error_message_quotes_a_long_token_whole(post) -> None:
    """A syntax error quotes the unexpected token: cut to a bounded message."""
    response = await post({"query": "{ __typename } " + "n" * LONG_LITERAL})
    [error] = response.json()["errors"]
    assert error["message"].startswith("Syntax Error: Unexpected Name")
    assert len(error["message"]) <= MAX_MESSAGE + len("...")


@ONE_BACKEND
@pytest.mark.parametrize("literal", [False, True], ids=["variable", "literal"])
async def test_a_subscription_is_bounded_the_same_way(server, literal: bool) -> None:
    pool = "a" * HUGE
    field = 'balanceChanged(applicationId: "1", pool: {}) {{ version }}'
    if literal:
        payload = {"query": "subscription { " + field.format(json.dumps(pool)) + " }"}
        expected = f"the document may be at most {MAX_DOCUMENT:,} characters"
    else:
        query = "subscription($p: String) { " + field.format("$p") + " }"
        payload = {"query": query, "variables": {"p": pool}}
        expected = f"pool may be at most 64 characters, got {HUGE:,}"
    async with socket(server) as ws:
        await initialised(ws, server.organization_key)
        await send(ws, {"id": "big", "type": "subscribe", "payload": payload})
        refused = await receive(ws)
    assert (refused["id"], refused["type"]) == ("big", "error")
    [error] = refused["payload"]
    assert error["message"].startswith(expected)
    assert len(error["message"]) < SHORT_MESSAGE
