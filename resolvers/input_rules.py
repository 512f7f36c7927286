"""Rules on input values that no single resolver can keep: a NUL character (U+0000) in any
string is refused before execution. PostgreSQL cannot store it in text (the statement
fails), SQLite can: refusing it up front keeps both backends alike and the error typed."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, StringValueNode, ValidationRule

NUL = "\x00"
NUL_MESSAGE = "string values may not contain NUL (\\u0000) characters"
VALIDATION = {"code": "VALIDATION"}


class NoNulInStringLiterals(ValidationRule):
    """String literals in the document (validated once per document text, then cached)."""

    def enter_string_value(self, node: StringValueNode, *_: object) -> None:
        if NUL in node.value:
            self.report_error(GraphQLError(NUL_MESSAGE, node, extensions=VALIDATION))


def holds_nul(value: Any) -> bool:
    """Whether a variable value (JSON) holds a NUL character anywhere."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False
