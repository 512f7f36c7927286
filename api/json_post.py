"""The common GraphQL request answered without Strawberry's HTTP view: a POST of one JSON
object ({"query", "variables", "operationName", "extensions"}), with a valid credential or
none (api/app.py answers a bad one first).

The view builds a request adapter, a sub-response, a parsed-data object and a Starlette
response for every request, about a tenth of a small mutation's CPU. Here the same
execution (`schema.execute` with the view's context, the operation types a POST allows),
the same result processing and the same answer (status, headers, JSON) are done directly.
The status, media type and refusals are the view's own (`UsageGraphQL.execute_http`,
api/http_answer.py). Anything else goes to the view unchanged: GET, another content type, a
streaming Accept, a batch, or a body that is not such an object."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send
from strawberry.http import GraphQLRequestData
from strawberry.types.graphql import OperationType

from api.http_answer import JSON, refusal

if TYPE_CHECKING:
    from api.app import UsageGraphQL

POST_OPERATIONS = OperationType.from_http("POST")
_STREAMING_ACCEPTS = (b"multipart/mixed", b"text/event-stream")
NOT_A_REQUEST = "The GraphQL request must be a JSON object (or a list of them)"


def encode_json(data: object) -> bytes:
    """An answer's JSON. A dashboard's is ~50 KB: orjson encodes it several times faster
    than json; a value orjson refuses (an int beyond 64 bits) takes the slow way."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data).encode()


def takes_fast_path(scope: Scope) -> bool:
    """A POST whose body is declared JSON and whose client does not ask for a stream."""
    if scope["method"] != "POST":
        return False
    content_type = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"accept" and any(kind in value for kind in _STREAMING_ACCEPTS):
            return False
    return content_type.split(b";", 1)[0].strip() == b"application/json"


def _operation(body: bytes) -> GraphQLRequestData | None:
    """The request's one operation, or None for anything the view must judge."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:  # json.loads may still take it (NaN): the view decides
        return None
    if isinstance(data, list):  # a batch
        return None
    if not isinstance(data, dict):  # a string, a number, null: the view would fail with a 500
        raise HTTPException(400, NOT_A_REQUEST)
    query = data.get("query")
    variables = data.get("variables")
    operation_name = data.get("operationName")
    extensions = data.get("extensions")
    if (
        not isinstance(query, str)
        or not isinstance(variables, dict | None)
        or not isinstance(operation_name, str | None)
        or not isinstance(extensions, dict | None)
    ):
        return None
    return GraphQLRequestData(
        query=query,
        variables=variables,
        operation_name=operation_name,
        extensions=extensions,
        protocol="http",
    )


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for the view after the body was read here: the body, then the client's."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def answer_json_post(view: UsageGraphQL, scope: Scope, receive: Receive, send: Send) -> None:
    body = await _read_body(receive)
    if body is None:
        return
    request = Request(scope, _replaying(body, receive))
    try:
        operation = _operation(body)
        if operation is None:
            await view(scope, _replaying(body, receive), send)
            return
        sub_response = await view.get_sub_response(request)
        context = await view.get_context(request, response=sub_response)
        result = await view.execute_post(request, operation, context, sub_response)
    except HTTPException as error:
        await refusal(error, request.headers.get("accept"))(scope, receive, send)
        return
    processed = await view.process_result(request, result)
    if result.errors:
        view._handle_errors(result.errors, processed)
    content = encode_json(processed)
    headers = [
        (b"content-length", str(len(content)).encode()),
        (b"content-type", (sub_response.media_type or JSON).encode()),
        *sub_response.headers.raw,
    ]
    await send(
        {
            "type": "http.response.start",
            "status": sub_response.status_code or 200,
            "headers": headers,
        }
    )
    await send({"type": "http.response.body", "body": content})
