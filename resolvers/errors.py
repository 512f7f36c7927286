"""Domain errors mapped once to GraphQL: typed `UserError`s in mutation payloads, a
`NOT_FOUND` GraphQL error for queries of things the caller cannot see, and `UNAVAILABLE`
for a transient failure of the database or the broker."""

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


UNAVAILABLE = "UNAVAILABLE"
UNAVAILABLE_MESSAGE = (
    "The service is briefly unavailable; retry (with the same idempotency key, for a mutation)."
)


def unavailable_error(error: GraphQLError) -> GraphQLError:
    """A transient database or broker failure (models/transient.py): safe to retry, as a
    mutation retried with the same idempotency key is applied at most once."""
    return GraphQLError(
        UNAVAILABLE_MESSAGE,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": UNAVAILABLE},
    )
