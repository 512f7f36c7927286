"""The two private Strawberry attributes the request rules read, verified against
strawberry-graphql 0.341.2 (`versions.VERIFIED`): a schema's graphql-core schema and the
operation name a request gave (Strawberry's public `operation_name` falls back to the
document's first operation, which hides an ambiguous request). Each falls back to a public
way when the attribute is gone."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLSchema
from strawberry.types import ExecutionContext


def graphql_schema_of(context: ExecutionContext) -> GraphQLSchema:
    """The graphql-core schema the operation runs on."""
    found = getattr(context.schema, "_schema", None)
    if isinstance(found, GraphQLSchema):
        return found
    # public, slower: the schema rebuilt from its SDL (cached by the schema object)
    return _rebuilt(context.schema)


_REBUILT: dict[int, tuple[Any, GraphQLSchema]] = {}


def _rebuilt(schema: Any) -> GraphQLSchema:
    from graphql import build_schema

    kept = _REBUILT.get(id(schema))
    if kept is None or kept[0] is not schema:
        kept = _REBUILT[id(schema)] = (schema, build_schema(schema.as_str()))
    return kept[1]


def provided_operation_name(context: ExecutionContext) -> str | None:
    """The operation name the request gave, None when it gave none."""
    if hasattr(context, "_provided_operation_name"):
        return context._provided_operation_name
    given = getattr(context.context, "operation_name", None)  # our Context, set per request
    return given if isinstance(given, str) else None
