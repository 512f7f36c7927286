"""The common JSON request read without the stock parsing (api/transport/json_request.py)
against Strawberry's own `parse_http_body`, on generated requests: whenever the direct
reading answers, the stock gives the same request."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData

from api.http_answer import decode_json
from api.transport.json_request import (
    SubResponse,
    is_plain_json,
    is_plain_post,
    plain_request,
    wants_single_answer,
)
from resolvers.schema import schema

STOCK = GraphQL(schema)

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON;charset=UTF-8",
    " application/json ",
    "application/json-seq",
    "application/graphql-response+json",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
]
ACCEPTS = [
    None,
    "",
    "*/*",
    "application/json",
    "application/graphql-response+json, application/json;q=0.9",
    "text/event-stream",
    "Text/Event-Stream;q=1, application/json",
    "multipart/mixed",
    "multipart/mixed;deferSpec=20220824, application/json",
    "text/html",
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
MEMBER = st.sampled_from(["query", "variables", "operationName", "extensions", "other"])
BODIES = (
    st.dictionaries(
        MEMBER,
        st.one_of(
            st.just("{ __typename }"),
            st.none(),
            st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=3),
            JSON_VALUES,
        ),
        max_size=5,
    )
    | JSON_VALUES
)


def _request(content_type: str, accept: str | None, body: bytes) -> Request:
    headers = [(b"content-type", content_type.encode())]
    if accept is not None:
        headers.append((b"accept", accept.encode()))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "query_string": b"",
        "headers": headers,
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        assert not sent
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


async def _stock(content_type: str, accept: str | None, body: bytes) -> Any:
    adapter = STOCK.request_adapter_class(_request(content_type, accept, body))
    try:
        return await STOCK.parse_http_body(adapter)
    except Exception as error:  # what the stock answers instead of a request
        return type(error)


def _direct(content_type: str, accept: str | None, body: bytes) -> GraphQLRequestData | None:
    if not is_plain_post(_request(content_type, accept, body).scope):
        return None
    try:
        return plain_request(decode_json(body))
    except ValueError:
        return None


@settings(max_examples=1000, deadline=None)
@given(
    content_type=st.sampled_from(CONTENT_TYPES),
    accept=st.sampled_from(ACCEPTS),
    data=BODIES,
)
async def test_the_direct_reading_agrees_with_the_stock_parsing(
    content_type: str, accept: str | None, data: Any
) -> None:
    body = json.dumps(data).encode()
    direct = _direct(content_type, accept, body)
    if direct is not None:
        assert direct == await _stock(content_type, accept, body)


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
async def test_the_common_request_is_read_directly(accept: str | None) -> None:
    body = {"query": "query Q($a: Int) { __typename }", "variables": {"a": 1}}
    body["operationName"] = "Q"
    encoded = json.dumps(body).encode()
    direct = _direct("application/json", accept, encoded)
    assert direct == GraphQLRequestData("query Q($a: Int) { __typename }", {"a": 1}, "Q", None)
    assert direct == await _stock("application/json", accept, encoded)


@pytest.mark.parametrize(
    ("content_type", "accept", "body"),
    [
        ("application/json", "text/event-stream", b'{"query": "{ a }"}'),  # streamed
        ("application/json", "multipart/mixed", b'{"query": "{ a }"}'),
        ("application/json", None, b'[{"query": "{ a }"}]'),  # a batch
        ("application/json", None, b'{"query": 1}'),  # the stock's own 400
        ("application/json", None, b'{"variables": {}}'),  # no query
        ("application/json", None, b"{"),  # not JSON
        ("text/plain", None, b'{"query": "{ a }"}'),
        ("APPLICATION/JSON", None, b'{"query": "{ a }"}'),  # the stock's 400
    ],
)
async def test_anything_else_is_left_to_the_stock(
    content_type: str, accept: str | None, body: bytes
) -> None:
    assert _direct(content_type, accept, body) is None


async def test_the_sub_response_keeps_what_resolvers_set() -> None:
    sub = SubResponse()
    assert (sub.status_code, sub.media_type, sub.raw_headers) == (None, None, [])
    sub.status_code = 503
    sub.headers["Retry-After"] = "1"
    assert sub.raw_headers == [(b"retry-after", b"1")]


# Requests the direct answer takes (a plain JSON POST), each answered once directly and once
# by the stock `run`: a query with variables and a fragment, request errors (syntax,
# validation, variables, operation choice), field errors, a mutation refused in its payload
# (nothing written) and both answer media types.
ANSWERED = [
    {"query": "query Q($n: Int = 3) { viewer { role } applications { name } }"},
    {"query": "{ ...V } fragment V on Query { viewer { role organizationId } }"},
    {"query": "{ viewer { role }"},
    {"query": "{ nope }"},
    {"query": "query Q($id: ID!) { application(id: $id) { name } }", "variables": {}},
    {"query": "query Q($id: ID!) { application(id: $id) { name } }", "variables": {"id": "x"}},
    {"query": "query A { __typename } query B { __typename }"},
    {"query": "query A { __typename } query B { __typename }", "operationName": "C"},
    {"query": "query A { __typename }", "operationName": "A", "extensions": {"x": 1}},
    {"query": 'mutation { createApplication(input: {name: ""}) { errors { code } } }'},
    {"query": "subscription { balanceChanged(applicationId: 1) { remaining } }"},
]


@pytest.mark.parametrize("accept", [None, "application/graphql-response+json"])
@pytest.mark.parametrize("body", ANSWERED, ids=lambda body: body["query"][:40])
async def test_the_direct_answer_is_the_stock_answer(
    backend: Any, accept: str | None, body: dict[str, Any]
) -> None:
    from api.app import create_app
    from models.accounts import create_organization

    app = create_app(backend.settings, migrate=False)
    view = next(route.endpoint.view for route in app.routes if hasattr(route.endpoint, "view"))
    _, issued = await create_organization("direct answers")
    headers = {"authorization": f"Bearer {issued.secret}", "content-type": "application/json"}
    if accept is not None:
        headers["accept"] = accept
    answers = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        for fast in (True, False):
            view.fast_paths = fast
            response = await client.post("/graphql", content=json.dumps(body), headers=headers)
            answers.append(
                (response.status_code, response.headers["content-type"], response.json())
            )
    assert view.fast_paths is False  # the second answer was the stock view's
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-type", b"text/plain"), (b"content-type", b"application/json")],
        [(b"content-type", b"application/json"), (b"content-type", b"text/plain")],
        [
            (b"content-type", b"application/json"),
            (b"accept", b"*/*"),
            (b"accept", b"multipart/mixed"),
        ],
        [
            (b"content-type", b"application/json"),
            (b"accept", b"multipart/mixed"),
            (b"accept", b"*/*"),
        ],
    ],
)
def test_repeated_headers_are_read_as_the_stock_reads_them(
    headers: list[tuple[bytes, bytes]],
) -> None:
    scope = {"type": "http", "method": "POST", "path": "/graphql", "headers": headers}
    stock = Request(scope).headers  # the first of each name, as the stock adapter reads it
    expected = is_plain_json(stock.get("content-type")) and wants_single_answer(stock.get("accept"))
    assert is_plain_post(scope) is expected
