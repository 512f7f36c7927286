"""GraphQL over HTTP details, through the real server (a POST or a GET): the operation to
run, the answer's media type and status, refusals as GraphQL JSON."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from api.app import NOT_A_NAME
from api.http_answer import NOT_A_REQUEST
from resolvers.operation_choice import AMBIGUOUS_MESSAGE
from tests.conftest import CLIENT_TLS

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
TWO_OPERATIONS = """
mutation Create { createApplication(input: {name: "must not exist"}) { application { id } } }
query Read { applications { name } }"""
TWO_QUERIES = "query A { viewer { role } } query B { __typename }"


async def _post(
    server, body: dict[str, Any] | bytes, *, accept: str | None = None, key: bool = True
) -> httpx.Response:
    headers = {"content-type": JSON}
    if accept is not None:
        headers["accept"] = accept
    if key:
        headers["authorization"] = f"Bearer {server.organization_key}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(verify=CLIENT_TLS) as client:
        return await client.post(server.graphql, content=content, headers=headers)


async def _get(server, params: dict[str, str], *, accept: str = JSON) -> httpx.Response:
    headers = {"accept": accept, "authorization": f"Bearer {server.organization_key}"}
    async with httpx.AsyncClient(verify=CLIENT_TLS) as client:
        return await client.get(server.graphql, params=params, headers=headers)


def _request_error(response: httpx.Response, media_type: str) -> dict[str, Any]:
    """A request error as `media_type` answers it: 400 without data, or 200 with null."""
    assert response.headers["content-type"] == media_type
    body = response.json()
    if media_type == GRAPHQL_RESPONSE:
        assert response.status_code == 400, body
        assert "data" not in body
    else:
        assert response.status_code == 200, body
        assert body["data"] is None
    return body["errors"][0]


@pytest.mark.parametrize("media_type", [JSON, GRAPHQL_RESPONSE])
async def test_several_operations_without_a_name_run_none(server, media_type: str) -> None:
    names_before = await _application_names(server)
    response = await _post(server, {"query": TWO_OPERATIONS}, accept=media_type)
    error = _request_error(response, media_type)
    assert (error["message"], error["extensions"]["code"]) == (AMBIGUOUS_MESSAGE, "VALIDATION")
    assert await _application_names(server) == names_before
    by_get = await _get(server, {"query": TWO_QUERIES}, accept=media_type)
    assert _request_error(by_get, media_type)["message"] == AMBIGUOUS_MESSAGE
    named = await _post(server, {"query": TWO_QUERIES, "operationName": "B"}, accept=media_type)
    assert (named.status_code, named.json()["data"]) == (200, {"__typename": "Query"})


async def _application_names(server) -> list[str]:
    response = await _post(server, {"query": "{ applications { name } }"})
    return [application["name"] for application in response.json()["data"]["applications"]]


@pytest.mark.parametrize("media_type", [JSON, GRAPHQL_RESPONSE])
async def test_an_unknown_operation_name_is_a_graphql_json_error(server, media_type: str) -> None:
    for response in (
        await _post(server, {"query": TWO_QUERIES, "operationName": "C"}, accept=media_type),
        await _get(server, {"query": TWO_QUERIES, "operationName": "C"}, accept=media_type),
    ):
        error = _request_error(response, media_type)
        assert error == {
            "message": 'Unknown operation named "C".',
            "extensions": {"code": "VALIDATION"},
        }


@pytest.mark.parametrize("name", [3, {"a": 1}, ["B"], True])
async def test_an_operation_name_that_is_not_a_string_is_a_400(server, name: object) -> None:
    response = await _post(server, {"query": TWO_QUERIES, "operationName": name})
    assert (response.status_code, response.headers["content-type"]) == (400, JSON)
    assert response.json()["errors"][0] == {
        "message": NOT_A_NAME,
        "extensions": {"code": "BAD_REQUEST"},
    }


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        ("{ viewer { role }", None),  # does not parse
        ("{ viewer { nope } }", None),  # does not validate
        ("query($id: ID!) { application(id: $id) { name } }", {"id": None}),  # coercion
        ("query($id: ID!) { application(id: $id) { name } }", {}),
    ],
)
async def test_graphql_response_json_answers_request_errors_with_400_and_no_data(
    server, document: str, variables: dict[str, Any] | None
) -> None:
    body = {"query": document, "variables": variables}
    _request_error(await _post(server, body, accept=GRAPHQL_RESPONSE), GRAPHQL_RESPONSE)
    _request_error(await _post(server, body, accept=JSON), JSON)
    params = {"query": document}
    if variables is not None:
        params["variables"] = json.dumps(variables)
    _request_error(await _get(server, params, accept=GRAPHQL_RESPONSE), GRAPHQL_RESPONSE)


async def test_graphql_response_json_answers_data_and_field_errors_with_data(server) -> None:
    ok = await _post(server, {"query": "{ viewer { role } }"}, accept=GRAPHQL_RESPONSE)
    assert (ok.status_code, ok.headers["content-type"]) == (200, GRAPHQL_RESPONSE)
    assert ok.json()["data"] == {"viewer": {"role": "ADMIN"}} and "errors" not in ok.json()
    missing = await _post(
        server, {"query": '{ application(id: "999999999") { name } }'}, accept=GRAPHQL_RESPONSE
    )
    assert missing.status_code == 200
    assert missing.json()["data"] == {"application": None}
    assert missing.json()["errors"][0]["path"] == ["application"]
    # without a credential: the 401 the field's refusal sets is kept
    anonymous = await _post(
        server, {"query": "{ viewer { role } }"}, accept=GRAPHQL_RESPONSE, key=False
    )
    assert (anonymous.status_code, anonymous.headers["content-type"]) == (401, GRAPHQL_RESPONSE)
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        ("application/graphql-response+json", GRAPHQL_RESPONSE),
        ("application/graphql-response+json, application/json;q=0.9", GRAPHQL_RESPONSE),
        ("application/json, application/graphql-response+json", JSON),
        ("application/graphql-response+json;q=0.5, application/json", JSON),
        ("application/json;q=0.1, application/graphql-response+json", GRAPHQL_RESPONSE),
        ("application/graphql-response+json;q=0, */*", JSON),
        ("text/html;q=0.9, application/graphql-response+json", GRAPHQL_RESPONSE),
    ],
)
async def test_the_media_type_is_the_one_the_client_prefers(
    server, accept: str | None, media_type: str
) -> None:
    response = await _post(server, {"query": "{ __typename }"}, accept=accept)
    assert response.headers["content-type"] == media_type
    unknown = await _post(server, {"query": "{ nope }"}, accept=accept)
    assert unknown.headers["content-type"] == media_type


@pytest.mark.parametrize("media_type", [JSON, GRAPHQL_RESPONSE])
async def test_refusals_before_graphql_runs_are_graphql_json(server, media_type: str) -> None:
    mutation = await _get(server, {"query": "mutation { __typename }"}, accept=media_type)
    assert (mutation.status_code, mutation.headers["allow"]) == (405, "POST")
    assert mutation.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    for response in (
        await _post(server, {"variables": {}}, accept=media_type),  # no query
        await _post(server, b"not json", accept=media_type),
        await _post(server, b'"a string"', accept=media_type),
    ):
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == media_type
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("body", [b'"text"', b" 3", b"null", b"true", b"-1.5"])
async def test_a_json_body_that_is_not_an_object_is_a_400(server, body: bytes) -> None:
    response = await _post(server, body)
    assert response.status_code == 400
    assert response.headers["content-type"] == JSON
    assert response.json()["errors"][0]["message"] == NOT_A_REQUEST


async def test_json_that_only_the_standard_library_reads_is_still_a_request(server) -> None:
    """NaN is not JSON, but Python's json reads it: the variable is then refused by type."""
    body = (
        b'{"query": "query($b: Boolean!) { __typename @include(if: $b) }", "variables": {"b": NaN}}'
    )
    response = await _post(server, body)
    assert response.status_code == 200
    assert "Variable '$b' has invalid value" in response.json()["errors"][0]["message"]


async def test_a_batch_is_refused_as_graphql_json(server) -> None:
    response = await _post(server, b'[{"query": "{ viewer { role } }"}]')
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
