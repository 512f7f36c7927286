"""The JSON POST fast path (api/json_post.py) answers exactly as Strawberry's view does, and
hands everything it does not take to the view."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.app import PRINCIPAL_SCOPE_KEY, create_app
from api.auth import authenticate
from api.json_post import NOT_A_REQUEST, takes_fast_path
from models.accounts import create_organization

# (body, taken by the fast path)
CASES: list[tuple[bytes, bool]] = [
    (b'{"query": "{ viewer { role } }"}', True),
    (b'{"query": "query Q { viewer { role } }", "operationName": "Q"}', True),
    (b'{"query": "query Q($n: Int) { viewer { role } }", "variables": {"n": 1}}', True),
    (b'{"query": "{ viewer { role } }", "variables": null, "extensions": {}}', True),
    (b'{"query": "{ viewer { role } "}', True),  # syntax error: 200 with errors
    (b'{"query": "{ viewer { nope } }"}', True),  # validation error
    (b'{"query": "query($n: Int!) { viewer { role } }", "variables": {}}', True),
    (
        b'{"query": "mutation { purchaseCredits(input: {applicationId: \\"999999\\",'
        b' pool: \\"ai\\", credits: 1}) { errors { code message } } }"}',
        True,
    ),
    (b'{"query": "subscription { lowCreditAlerts(applicationId: \\"1\\") { kind } }"}', True),
    # no operation to run: request errors
    (b'{"query": "query Q { viewer { role } }", "operationName": "Other"}', True),
    (b'{"query": "query A { viewer { role } } query B { viewer { role } }"}', True),
    (
        b'{"query": "query A { viewer { role } } query B { __typename }", "operationName": "B"}',
        True,
    ),
    # not one operation object: the view decides
    (b'{"query": null}', False),
    (b"{}", False),
    (b'{"query": 3}', False),
    (b'{"query": "{ viewer { role } }", "variables": []}', False),
    (b'{"query": "{ viewer { role } }", "operationName": 1}', False),
    (b'{"query": "{ viewer { role } }", "extensions": "x"}', False),
    (b'[{"query": "{ viewer { role } }"}]', False),
    (b"not json", False),
    (b'{"query": "{ viewer { role } }", "variables": {"n": NaN}}', False),
    (b"", False),
]


def _scope(headers: list[tuple[bytes, bytes]], method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def _call(asgi: Any, scope: dict[str, Any], body: bytes) -> tuple[int, dict, bytes]:
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop() if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(scope, receive, send)
    start = sent[0]
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), content


@pytest.fixture
async def served(backend) -> tuple[Any, Any, str, list[int]]:
    """The app, its GraphQL view (counting the requests it runs) and an ADMIN key."""
    app = create_app(backend.settings, migrate=False)
    route = next(r for r in app.routes if getattr(r, "path", None) == "/graphql")
    view = route.endpoint.view  # type: ignore[attr-defined]
    runs: list[int] = []
    run = view.run

    async def counted_run(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return await run(*args, **kwargs)

    view.run = counted_run
    _, issued = await create_organization("json post")
    return app, view, issued.secret, runs


@pytest.mark.parametrize(
    "accept", [None, b"application/graphql-response+json"], ids=["json", "graphql-response"]
)
@pytest.mark.parametrize("authenticated", [True, False], ids=["key", "no key"])
@pytest.mark.parametrize(("body", "fast"), CASES)
async def test_the_fast_path_answers_as_the_view(
    served, body: bytes, fast: bool, authenticated: bool, accept: bytes | None
) -> None:
    """Status, body and headers as the view gives them (an unauthenticated call: 401 set by
    the resolver through the sub-response), in either media type."""
    app, view, key, runs = served
    headers = [(b"content-type", b"application/json")]
    if accept is not None:
        headers.append((b"accept", accept))
    if authenticated:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    status, answer_headers, content = await _call(app, _scope(headers), body)
    assert len(runs) == (0 if fast else 1)

    direct = _scope(headers)
    if authenticated:
        direct[PRINCIPAL_SCOPE_KEY] = await authenticate(f"Bearer {key}", view.secret)
    expected_status, expected_headers, expected = await _call(view, direct, body)
    assert (status, content) == (expected_status, expected)
    assert answer_headers[b"content-type"] == expected_headers[b"content-type"]
    assert int(answer_headers[b"content-length"]) == len(content)
    assert "data" in json.loads(content) or "errors" in json.loads(content)


@pytest.mark.parametrize(
    ("headers", "method", "fast"),
    [
        ([(b"content-type", b"application/json")], "POST", True),
        ([(b"content-type", b"application/json; charset=utf-8")], "POST", True),
        ([(b"content-type", b"application/json")], "GET", False),
        ([(b"content-type", b"application/graphql")], "POST", False),
        ([(b"content-type", b"multipart/form-data; boundary=x")], "POST", False),
        ([], "POST", False),
        (
            [(b"content-type", b"application/json"), (b"accept", b"text/event-stream")],
            "POST",
            False,
        ),
        ([(b"content-type", b"application/json"), (b"accept", b"multipart/mixed")], "POST", False),
        ([(b"content-type", b"application/json"), (b"accept", b"application/json")], "POST", True),
    ],
)
def test_only_plain_json_posts_take_the_fast_path(headers, method: str, fast: bool) -> None:
    assert takes_fast_path(_scope(headers, method)) is fast


@pytest.mark.parametrize("body", [b'"text"', b"3", b"null", b"true"])
async def test_a_json_body_that_is_not_an_object_is_a_400(served, body: bytes) -> None:
    """Strawberry's view fails on these with a 500."""
    app, _, key, runs = served
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode())]
    status, answer_headers, content = await _call(app, _scope(headers), body)
    assert status == 400
    assert json.loads(content)["errors"][0]["message"] == NOT_A_REQUEST
    assert answer_headers[b"content-type"] == b"application/json"
    assert runs == []
