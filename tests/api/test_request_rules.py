"""The one schema extension every operation goes through (resolvers/request_rules.py), on a
small schema of its own: cached parse and validation (the same document and errors again),
the token, depth and alias limits, NUL in variables refused before execution, and
unexpected errors masked while typed ones pass."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError

from resolvers.request_rules import MAX_ALIASES, MAX_TOKENS, RequestRules, parsed

ran: list[str] = []


@strawberry.type
class Node:
    name: str

    @strawberry.field
    def child(self) -> Node:
        return Node(name=self.name + "'")


@strawberry.type
class Query:
    @strawberry.field
    def echo(self, text: str) -> str:
        ran.append(text)
        return text

    @strawberry.field
    def crash(self) -> int | None:
        raise RuntimeError("SELECT secret FROM stack_trace")

    @strawberry.field
    def refused(self) -> int | None:
        raise GraphQLError("not yours", extensions={"code": "NOT_FOUND"})

    @strawberry.field
    def node(self) -> Node:
        return Node(name="n")


SCHEMA = strawberry.Schema(query=Query, extensions=[RequestRules])


async def test_documents_are_parsed_and_validated_once_per_text() -> None:
    query = "query Q($t: String!) { echo(text: $t) }"
    first = await SCHEMA.execute(query, variable_values={"t": "a"})
    hits = parsed.cache_info().hits
    second = await SCHEMA.execute(query, variable_values={"t": "b"})
    assert (first.data, second.data) == ({"echo": "a"}, {"echo": "b"})
    assert parsed.cache_info().hits == hits + 1
    invalid = "{ echo(text: 1) }"
    errors = [(await SCHEMA.execute(invalid)).errors for _ in range(2)]
    assert errors[0] and errors[0] == errors[1]  # the cached validation, same errors


async def test_limits_refuse_before_execution() -> None:
    ran.clear()
    deep = "{ node { " + "child { " * 20 + "name" + " }" * 20 + " } }"
    assert "exceeds maximum operation depth" in (await SCHEMA.execute(deep)).errors[0].message
    aliases = "{ " + " ".join(f'a{i}: echo(text: "x")' for i in range(MAX_ALIASES + 1)) + " }"
    result = await SCHEMA.execute(aliases)
    assert result.errors and "aliases found" in result.errors[0].message
    tokens = "{ " + 'echo(text: "x") ' * MAX_TOKENS + "}"
    result = await SCHEMA.execute(tokens)
    assert result.errors and f"more than {MAX_TOKENS} tokens" in result.errors[0].message
    assert ran == []


async def test_limits_are_checked_before_the_standard_rules() -> None:
    """A document past a limit gets the limit's error alone: the standard rules (whose cost
    the limits bound) do not run on it; within the limits, they do."""
    aliases = " ".join(f'a{i}: echo(text: "x")' for i in range(MAX_ALIASES + 1))
    result = await SCHEMA.execute("{ " + aliases + " nope }")
    assert [e.message for e in result.errors] == [
        f"{MAX_ALIASES + 1} aliases found. Allowed: {MAX_ALIASES}"
    ]
    result = await SCHEMA.execute('{ a0: echo(text: "x") nope }')
    assert [e.message[:27] for e in result.errors] == ["Cannot query field 'nope' o"]


async def test_a_nul_in_a_variable_is_refused_unexecuted() -> None:
    ran.clear()
    result = await SCHEMA.execute(
        "query Q($t: String!) { echo(text: $t) }", variable_values={"t": "a\x00b"}
    )
    assert result.data is None and result.errors
    assert result.errors[0].extensions == {"code": "VALIDATION"}
    assert ran == []


async def test_unexpected_errors_are_masked_and_typed_ones_kept() -> None:
    result = await SCHEMA.execute("{ crash refused }")
    by_path = {tuple(e.path or ()): e for e in result.errors or []}
    crash, refused = by_path[("crash",)], by_path[("refused",)]
    assert (crash.message, crash.extensions) == ("Internal error.", {"code": "INTERNAL"})
    assert "secret" not in str(result.errors)
    assert (refused.message, refused.extensions) == ("not yours", {"code": "NOT_FOUND"})
