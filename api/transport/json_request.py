"""The common GraphQL request over HTTP, read without the stock view's general parsing: a
POST whose body is one JSON object of well-typed members, sent without asking for a
streamed answer. Strawberry's `parse_http_body` works the same request out through an
e-mail header parser (for the content type) and a scan of its stream transports (for the
Accept header); for this request both always come out the same, so the answer here is
the one it gives, for less work on every call. The view (`UsageGraphQL.answer`) then
takes only the stock `run`'s steps that apply to such a request: no request adapter, no
IDE or WebSocket checks, no test for a streamed or batched result (a runtime protocol
check that alone costs a small mutation about 1% of its CPU).

Part of the fence (see the package): it knows which Accept headers may select one of
Strawberry's streamed transports (multipart/mixed, text/event-stream) and what the stock
`get_sub_response` gives, verified against strawberry-graphql 0.341.2 and graphql-core
3.3.2 (`resolvers.runtime.versions.VERIFIED`); the view uses it only when the fast paths
run. Whatever it does not recognise it leaves to the stock parsing (None), and
tests/api/test_json_request.py compares the two on generated requests, and the direct
answer with the stock view's on requests that succeed and fail in every way."""

from __future__ import annotations

from starlette.background import BackgroundTasks
from starlette.datastructures import MutableHeaders
from starlette.types import Scope
from strawberry.http import GraphQLRequestData
from strawberry.types.graphql import OperationType

MEMBERS = frozenset({"query", "variables", "operationName", "extensions"})
# Accept headers that name neither streamed transport: a single JSON answer. Anything else
# (a multipart or event-stream request, or a header we have not seen) is parsed by the stock.
STREAMED = ("multipart", "event-stream")
POST_OPERATIONS = OperationType.from_http("POST")


def is_plain_json(content_type: str | None) -> bool:
    """`application/json`, with or without parameters (a charset); the stock refuses
    another spelling (APPLICATION/JSON) with 400, and so the stock answers it."""
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip() == "application/json"


def wants_single_answer(accept: str | None) -> bool:
    if not accept:
        return True
    lowered = accept.lower()
    return not any(streamed in lowered for streamed in STREAMED)


def is_plain_post(scope: Scope) -> bool:
    """A POST declared plain JSON whose client asks for a single answer, read off the raw
    headers (the first of each name, as Starlette's `Headers.get` gives it) without
    building the request adapter the stock view reads them through."""
    if scope["method"] != "POST":
        return False
    content_type = accept = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            if content_type is None:
                content_type = value.decode("latin-1")
        elif name == b"accept" and accept is None:
            accept = value.decode("latin-1")
    return is_plain_json(content_type) and wants_single_answer(accept)


def plain_request(data: object) -> GraphQLRequestData | None:
    """The request a decoded body makes, when it is the plain case; else None (the stock
    parsing decides, with its own errors for a malformed one)."""
    if type(data) is not dict or not MEMBERS.issuperset(data):
        return None
    query = data.get("query")
    variables = data.get("variables")
    extensions = data.get("extensions")
    if not (
        isinstance(query, str)
        and (variables is None or type(variables) is dict)
        and (extensions is None or type(extensions) is dict)
    ):
        return None
    return GraphQLRequestData(
        query=query,
        variables=variables,
        operation_name=data.get("operationName"),
        extensions=extensions,
        protocol="http",
    )


class SubResponse:
    """What resolvers and the view may set on the answer before it exists: its status,
    media type, headers and background tasks (the stock builds a whole empty Starlette
    `Response` for it, and deletes its content-length, on every request)."""

    __slots__ = ("_headers", "background", "media_type", "status_code")

    def __init__(self) -> None:
        self.status_code: int | None = None
        self.media_type: str | None = None
        self.background: BackgroundTasks | None = None
        self._headers: MutableHeaders | None = None

    @property
    def headers(self) -> MutableHeaders:
        if self._headers is None:
            self._headers = MutableHeaders()
        return self._headers

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [] if self._headers is None else self._headers.raw
