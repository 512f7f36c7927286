"""How a GraphQL result is answered over HTTP (GraphQL over HTTP): the media type the client
prefers, the status, and the body.

- `application/graphql-response+json` when the client's Accept prefers it (order, then q),
  else `application/json` (no Accept, `*/*`, anything else).
- A request error (the document does not parse or validate, a variable cannot be coerced,
  the operation to run cannot be chosen: an answer without data whose errors have no path)
  is 400 without a `data` entry under `application/graphql-response+json`, and 200 with
  `"data": null` under `application/json`, as that media type's legacy clients expect.
- A status a resolver or a rule already set (401) is kept.
- A request refused before GraphQL runs (not JSON, no query, an operation type the method
  does not allow) answers a GraphQL-shaped error, never plain text."""

from __future__ import annotations

import json
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.responses import Response
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types import ExecutionResult

from resolvers.preserialized import json_default, orjson_default

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
_CANDIDATES = {GRAPHQL_RESPONSE: GRAPHQL_RESPONSE, JSON: JSON, "application/*": JSON, "*/*": JSON}
REFUSAL_CODES = {400: "BAD_REQUEST", 405: "METHOD_NOT_ALLOWED"}
NOT_A_REQUEST = "The GraphQL request must be a JSON object (or a list of them)"


def encode_json(data: object) -> bytes:
    """An answer's JSON. A dashboard's is ~50 KB: orjson encodes it several times faster
    than json; a value orjson refuses (an int beyond 64 bits) takes the slow way."""
    try:
        return orjson.dumps(data, default=orjson_default)
    except TypeError:
        return json.dumps(data, default=json_default).encode()


def decode_json(data: str | bytes) -> object:
    """A request's JSON: orjson, or json for what only json accepts (NaN, big numbers)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # raises JSONDecodeError, as the view expects


def is_json_container(body: bytes) -> bool:
    """Whether a JSON text is an object or a list: its first non-blank byte says so."""
    return body.lstrip()[:1] in (b"{", b"[")


def response_media_type(accept: str | None) -> str:
    """The media type to answer with, from the request's Accept header."""
    if not accept or "graphql-response+json" not in accept:
        return JSON
    best, best_q = JSON, -1.0
    for part in accept.split(","):
        media, *parameters = part.split(";")
        chosen = _CANDIDATES.get(media.strip().lower())
        if chosen is None:
            continue
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:  # the first of equal preference wins
            best, best_q = chosen, q
    return best if best_q > 0 else JSON


def is_request_error(result: ExecutionResult) -> bool:
    """Nothing was executed: no data, and no error belongs to a field (a path)."""
    return (
        result.data is None
        and bool(result.errors)
        and all(error.path is None for error in result.errors or ())
    )


def answer_status(result: ExecutionResult, media_type: str, status: int | None) -> int | None:
    """The status for `result`; `status` is the one already set (None: none)."""
    if status is None and media_type == GRAPHQL_RESPONSE and is_request_error(result):
        return 400
    return status


def shape_body(body: dict[str, Any], result: ExecutionResult, media_type: str) -> None:
    """Drops `data` from a request error's body under application/graphql-response+json."""
    if media_type == GRAPHQL_RESPONSE and is_request_error(result):
        body.pop("data", None)


def unknown_operation(error: CannotGetOperationTypeError) -> ExecutionResult:
    """The request names an operation its document lacks: a request error."""
    return ExecutionResult(
        data=None,
        errors=[GraphQLError(error.as_http_error_reason(), extensions={"code": "VALIDATION"})],
    )


def refusal(error: HTTPException, accept: str | None) -> Response:
    """A request refused before GraphQL ran, as a GraphQL-shaped error in the media type
    the request's `accept` prefers."""
    media_type = response_media_type(accept)
    code = REFUSAL_CODES.get(error.status_code, "BAD_REQUEST")
    body = {"errors": [{"message": error.reason, "extensions": {"code": code}}]}
    headers = {"Allow": "POST"} if error.status_code == 405 else None  # a mutation by GET
    return Response(
        orjson.dumps(body), status_code=error.status_code, headers=headers, media_type=media_type
    )
