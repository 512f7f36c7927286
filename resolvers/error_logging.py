"""How GraphQL errors are logged (Strawberry's `Schema.process_errors`, called with the
errors before they are masked): an error we raised on purpose (UNAUTHENTICATED,
NOT_FOUND, a validation or syntax error) is the client's, answered to it and kept in the
request log, so it is one DEBUG line at most, without a traceback; a transient failure of
the database or the broker (answered UNAVAILABLE) is one WARNING line; any other is ours,
an ERROR with its traceback. Neither prints the query (Strawberry's `str(error)` quotes the
document around the error) and a message is cut short: both can be client input."""

from __future__ import annotations

import logging

from graphql import GraphQLError

from models.request_log import clip
from models.transient import is_transient

log = logging.getLogger("usagegraph.graphql")
MAX_EXPECTED_MESSAGE = 300  # characters of an expected error's message logged


def unexpected(error: GraphQLError) -> bool:
    """An error no resolver raised on purpose (those raise GraphQLError)."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def code_of(error: GraphQLError) -> str:
    """An error's code: its own, else what a document without one failed at."""
    code = (error.extensions or {}).get("code")
    if code is not None:
        return str(code)
    return "GRAPHQL_PARSE_FAILED" if "Syntax Error" in error.message else "GRAPHQL_INVALID"


def _subject(error: GraphQLError, what: str) -> str:
    """`what`, and where in the document (the field's path, else the line and column)."""
    if error.path:
        return f"{what} at {'.'.join(str(part) for part in error.path)}"
    if error.locations:
        places = ", ".join(f"{place.line}:{place.column}" for place in error.locations)
        return f"{what} at {places}"
    return what


def log_errors(errors: list[GraphQLError]) -> None:
    for error in errors:
        if unexpected(error) and is_transient(error):  # answered UNAVAILABLE: no bug of ours
            log.warning("%s: %s", _subject(error, "unavailable"), error.original_error)
        elif unexpected(error):
            subject = _subject(error, "unexpected error")
            log.error("%s: %s", subject, error.message, exc_info=error.original_error)
        elif log.isEnabledFor(logging.DEBUG):
            message = clip(error.message, MAX_EXPECTED_MESSAGE)
            log.debug("%s: %s", _subject(error, code_of(error)), message)
