"""Domain errors mapped once to GraphQL: typed `UserError`s in mutation payloads, a
`NOT_FOUND` GraphQL error for queries of things the caller cannot see, and `UNAVAILABLE`
for a transient failure of the database or the broker."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

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


PayloadT = TypeVar("PayloadT")
Params = ParamSpec("Params")


def errors_in_payload(
    payload: type[PayloadT],
) -> Callable[[Callable[Params, Awaitable[PayloadT]]], Callable[Params, Awaitable[PayloadT]]]:
    """Wraps a mutation resolver: a domain error (an expected failure: INSUFFICIENT_CREDITS,
    NOT_FOUND, ...) comes back as the payload's typed `errors`, never as a GraphQL error.
    Strawberry reads the wrapped resolver's signature, so arguments stay as declared."""

    def wrap(
        resolver: Callable[Params, Awaitable[PayloadT]],
    ) -> Callable[Params, Awaitable[PayloadT]]:
        @functools.wraps(resolver)
        async def resolve(*args: Params.args, **kwargs: Params.kwargs) -> PayloadT:
            try:
                return await resolver(*args, **kwargs)
            except DomainError as error:
                return payload(errors=user_errors(error))

        return resolve

    return wrap


@contextmanager
def errors_as_query_errors() -> Iterator[None]:
    """Around a query's or a subscription's checks: a domain error is raised as a GraphQL
    error carrying its code (NOT_FOUND for what the caller cannot see)."""
    try:
        yield
    except DomainError as error:
        raise query_error(error) from None
