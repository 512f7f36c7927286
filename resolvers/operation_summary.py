"""What the request log records of a GraphQL operation, noted once while the operation runs
(resolvers/request_rules.py) from the document the server parsed: the operation's name, its
root fields, and the application and End User its root fields' arguments name (the log's
`endpoint`, and its attribution of an organization key's request or of a mutation's End
User). The request log writer reads it from the request's draft and parses nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    OperationDefinitionNode,
    ValueNode,
    VariableNode,
    value_from_ast_untyped,
)


@dataclass(frozen=True, slots=True)
class OperationSummary:
    operation_name: str | None
    root_fields: tuple[str, ...]
    application: Any = None  # an `applicationId` (or `application(id:)`) as sent, unchecked
    end_user: dict[str, Any] | None = None  # an `endUser` reference (`id` or `externalId`)


def _roots(document: DocumentNode, wanted: str | None) -> tuple[str | None, tuple[FieldNode, ...]]:
    """The chosen operation's name and root fields: the one named `wanted`, else the first."""
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        own = definition.name.value if definition.name else None
        if wanted is None or own == wanted:
            selections = definition.selection_set.selections
            return wanted or own, tuple(s for s in selections if isinstance(s, FieldNode))
    return wanted, ()


def _value(node: ValueNode, variables: dict[str, Any] | None) -> Any:
    if isinstance(node, VariableNode):
        return (variables or {}).get(node.name.value)
    return value_from_ast_untyped(node, variables)


def _argument(field: FieldNode, name: str, variables: dict[str, Any] | None) -> Any:
    for argument in field.arguments or ():
        if argument.name.value == name:
            return _value(argument.value, variables)
    return None


def _named(field: FieldNode, variables: dict[str, Any] | None) -> tuple[Any, Any]:
    """(application id, End User reference) a root field names in its arguments."""
    application = _argument(field, "applicationId", variables)
    end_user: Any = _argument(field, "endUserId", variables)
    end_user = {"id": end_user} if end_user is not None else None
    data = _argument(field, "input", variables)
    if isinstance(data, dict):
        application = data.get("applicationId", application)
        end_user = data.get("endUser") or end_user
    if application is None and field.name.value == "application":
        application = _argument(field, "id", variables)
    return application, end_user if isinstance(end_user, dict) else None


def summarize(
    document: DocumentNode, operation_name: str | None, variables: dict[str, Any] | None
) -> OperationSummary:
    """The operation `operation_name` chooses (the first, without one) as the log sees it;
    no root fields when there is no such operation."""
    name, fields = _roots(document, operation_name)
    application = end_user = None
    for field in fields:
        named_application, named_end_user = _named(field, variables)
        application = application or named_application
        end_user = end_user or named_end_user
    roots = tuple(dict.fromkeys(field.name.value for field in fields))
    return OperationSummary(name, roots, application, end_user)
