"""Domain error codes, defined once; the GraphQL layer maps them to typed UserErrors."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    NOT_FOUND = "NOT_FOUND"
    VALIDATION = "VALIDATION"
    FORBIDDEN = "FORBIDDEN"
    EXPIRED = "EXPIRED"


EXCERPT_LENGTH = 20


def excerpt(value: str) -> str:
    """A client's value as an error message quotes it: its first characters only."""
    if len(value) <= EXCERPT_LENGTH:
        return repr(value)
    return f"{value[:EXCERPT_LENGTH]!r}..."


class DomainError(Exception):
    """An expected failure of a domain operation. Raising it rolls the transaction back."""

    code: ErrorCode = ErrorCode.VALIDATION

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}: {self.message!r})"


class InsufficientCredits(DomainError):
    code = ErrorCode.INSUFFICIENT_CREDITS


class IdempotencyConflict(DomainError):
    code = ErrorCode.IDEMPOTENCY_CONFLICT


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class ValidationFailed(DomainError):
    code = ErrorCode.VALIDATION


class Forbidden(DomainError):
    code = ErrorCode.FORBIDDEN


class Expired(DomainError):
    code = ErrorCode.EXPIRED
