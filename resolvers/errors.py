"""Domain errors mapped once to GraphQL: typed `UserError`s in mutation payloads, and a
`NOT_FOUND` GraphQL error for queries of things the caller cannot see."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError

from models.errors import DomainError, NotFound
from models.errors import ErrorCode as DomainErrorCode

ErrorCode = strawberry.enum(DomainErrorCode, name="ErrorCode")


@strawberry.type
class UserError:
    code: ErrorCode
    message: str
    field: str | None = None


def user_errors(error: DomainError) -> list[UserError]:
    return [UserError(code=error.code, message=error.message, field=error.field)]


def query_error(error: DomainError) -> GraphQLError:
    return GraphQLError(error.message, extensions={"code": error.code.value})


def not_found(what: str) -> GraphQLError:
    return query_error(NotFound(f"{what} not found"))


def parse_id(value: object) -> int | None:
    """A GraphQL ID of ours as an integer; None for anything that cannot be one."""
    text = str(value)
    if not text.isdigit() or len(text) > 19:
        return None
    number = int(text)
    return number if 0 < number < 2**63 else None
