"""A request's record while it runs (docs/request-log.md), kept in its ASGI scope: the
request log middleware opens it, the authentication and the GraphQL view add what they
learn, and the writer turns it into a log row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.request_log import MAX_MESSAGE, clip
from resolvers.operation_summary import OperationSummary

# Where a request's draft travels in the ASGI scope.
DRAFT_SCOPE_KEY = "usagegraph.request_log"


class RequestDraft:
    """What is known of a request while it runs: the middleware opens it, the authentication
    and the GraphQL view add to it (the view: what each operation noted while it ran), and
    the log writer turns it into a row off the request path (where the End User and the
    application of a credential the request did not check are worked out)."""

    __slots__ = (
        "api_key_prefix",
        "application_id",
        "authorization",
        "end_user_external_id",
        "end_user_id",
        "error_code",
        "error_message",
        "latency_ms",
        "method",
        "operations",
        "organization_id",
        "path",
        "principal_known",
        "request_id",
        "route",
        "status",
        "time",
        "websocket",
    )

    def __init__(self, time: datetime, method: str, path: str, request_id: str) -> None:
        self.time = time
        self.method = method
        self.path = path
        self.request_id = request_id
        self.route: str | None = None  # the matched route's template, when one matched
        self.status = 0
        self.latency_ms = 0.0
        self.websocket = False
        self.authorization: bytes | None = None  # the raw header, read by the writer only
        self.principal_known = False  # the credential was verified (or refused) in-request
        self.application_id: int | None = None
        self.organization_id: int | None = None
        self.api_key_prefix: str | None = None
        self.end_user_id: int | None = None
        self.end_user_external_id: str | None = None
        self.error_code: str | None = None
        self.error_message: str | None = None
        # each GraphQL operation of the request, as it ran (resolvers/operation_summary.py)
        self.operations: list[OperationSummary] = []

    def note_error(self, code: str, message: str | None) -> None:
        """Keeps the first error of the request (the one that explains it)."""
        if self.error_code is None:
            self.error_code = code
            self.error_message = clip(message, MAX_MESSAGE)


def draft_of(scope: dict[str, Any]) -> RequestDraft | None:
    return scope.get(DRAFT_SCOPE_KEY)
