"""Rules on input values that no single resolver can keep, checked before execution:

- A NUL character (U+0000) in any string is refused. PostgreSQL cannot store it in text
  (the statement fails), SQLite can: refusing it up front keeps both backends alike and the
  error typed.
- Every string has a bound: a string given to an argument or input field is at most that
  name's bound (`STRING_BOUNDS`: a name means the same thing wherever the schema uses it),
  any other string, name or enum value in a request at most `MAX_STRING`. Beyond it the
  request is refused with a VALIDATION error that quotes a short prefix only, before any
  other rule (graphql-core's own messages quote whole values). A document longer than
  `MAX_DOCUMENT` is refused the same way before it is parsed (`RequestRules`).

Literals are checked once per document text (validation is cached); variable values, which
validation does not see, on every request, in one walk."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    EnumValueNode,
    GraphQLError,
    ListValueNode,
    NameNode,
    Node,
    ObjectFieldNode,
    StringValueNode,
    ValidationRule,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    visit,
)

from models.errors import excerpt

NUL = "\x00"
NUL_MESSAGE = "string values may not contain NUL (\\u0000) characters"
VALIDATION = {"code": "VALIDATION"}

# Longest value, in characters, of each string argument or input field by its GraphQL name;
# each at least the longest value the domain accepts there (models/).
STRING_BOUNDS: dict[str, int] = {
    "pool": 64,  # a pool key
    "key": 64,  # a pool key
    "feature": 100,
    "idempotencyKey": 255,
    "externalId": 200,
    "name": 200,
    "email": 320,
    "plan": 200,
    "package": 200,
    "reference": 200,
    "code": 200,  # a temporary code
    "after": 200,  # a cursor
    "endpoint": 300,
    "apiKeyPrefix": 32,
    "id": 64,
    "applicationId": 64,
    "endUserId": 64,
}
# Any other string (a date, a variable's default), name or enum value.
MAX_STRING = 1_000
# A whole document, in characters (one of MAX_TOKENS ordinary tokens is far shorter).
MAX_DOCUMENT = 100_000


def string_bound(name: str | None) -> int:
    return STRING_BOUNDS.get(name, MAX_STRING) if name is not None else MAX_STRING


def too_long(what: str, bound: int, value: str) -> GraphQLError:
    message = f"{what} may be at most {bound:,} characters, got {len(value):,} ({excerpt(value)})"
    return GraphQLError(message, extensions=VALIDATION)


class _NamedValues:
    """A visitor of the values given to a name: each argument and input object field's
    value, or each item of a list given to one (`named_value`)."""

    def enter_argument(self, node: ArgumentNode, *_: object) -> None:
        self._each(node.name.value, node.value)

    def enter_object_field(self, node: ObjectFieldNode, *_: object) -> None:
        self._each(node.name.value, node.value)

    def _each(self, name: str, value: Node) -> None:
        for item in value.values if isinstance(value, ListValueNode) else (value,):
            self.named_value(name, item)

    def named_value(self, name: str, item: Node) -> None:
        raise NotImplementedError


class BoundedStringLiterals(_NamedValues, ValidationRule):
    """NUL characters and lengths of the strings and names written in the document."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.checked: set[int] = set()  # string nodes already judged by their name's bound

    def named_value(self, name: str, item: Node) -> None:
        bound = string_bound(name)
        if isinstance(item, StringValueNode) and len(item.value) > bound:
            self.checked.add(id(item))
            self.report_error(_located(too_long(name, bound, item.value), item))

    def enter_string_value(self, node: StringValueNode, *_: object) -> None:
        if NUL in node.value:
            self.report_error(GraphQLError(NUL_MESSAGE, node, extensions=VALIDATION))
        if id(node) not in self.checked and len(node.value) > MAX_STRING:
            self.report_error(_located(too_long("a string", MAX_STRING, node.value), node))

    def enter_name(self, node: NameNode, *_: object) -> None:
        if len(node.value) > MAX_STRING:
            self.report_error(_located(too_long("a name", MAX_STRING, node.value), node))

    def enter_enum_value(self, node: EnumValueNode, *_: object) -> None:
        if len(node.value) > MAX_STRING:
            self.report_error(_located(too_long("an enum value", MAX_STRING, node.value), node))


def _located(error: GraphQLError, node: Node) -> GraphQLError:
    return GraphQLError(error.message, node, extensions=error.extensions)


class _VariableUses(_NamedValues, Visitor):
    """The variables the document defines, each with the argument or input field name it
    is given to (None: none)."""

    def __init__(self) -> None:
        super().__init__()
        self.uses: dict[str, str | None] = {}

    def enter_variable_definition(self, node: VariableDefinitionNode, *_: object) -> None:
        self.uses.setdefault(node.variable.name.value, None)

    def named_value(self, name: str, item: Node) -> None:
        if isinstance(item, VariableNode):
            known = self.uses.get(item.name.value)
            # given to several names: the tightest bound holds
            if known is None or string_bound(name) < string_bound(known):
                self.uses[item.name.value] = name


_USES: dict[int, tuple[DocumentNode, dict[str, str | None]]] = {}
_MAX_USES = 1_000


def variable_uses(document: DocumentNode) -> dict[str, str | None]:
    """Per variable the document defines, the name whose bound its string value has; kept
    per document."""
    found = _USES.get(id(document))
    if found is not None and found[0] is document:
        return found[1]
    uses = _VariableUses()
    visit(document, uses)
    _USES[id(document)] = (document, uses.uses)
    if len(_USES) > _MAX_USES:
        _USES.pop(next(iter(_USES)))
    return uses.uses


def variable_error(
    variables: Mapping[str, Any], uses: Mapping[str, str | None]
) -> GraphQLError | None:
    """The first NUL character or over-long string in the values (JSON) of the variables
    the document defines (graphql-core ignores the others)."""
    for variable, value in variables.items():
        if variable not in uses:
            continue
        error = _value_error(value, uses[variable], f"${variable}")
        if error is not None:
            return error
    return None


def _value_error(value: Any, name: str | None, what: str) -> GraphQLError | None:
    if isinstance(value, str):
        if NUL in value:
            return GraphQLError(NUL_MESSAGE, extensions=VALIDATION)
        bound = string_bound(name)
        return too_long(name or what, bound, value) if len(value) > bound else None
    if isinstance(value, dict):
        for key, item in value.items():
            if len(key) > MAX_STRING or NUL in key:
                return _value_error(key, None, "a field name")
            error = _value_error(item, key, key)
            if error is not None:
                return error
    elif isinstance(value, list):
        for item in value:
            error = _value_error(item, name, what)
            if error is not None:
                return error
    return None
