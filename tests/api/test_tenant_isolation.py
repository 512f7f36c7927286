"""Tenant isolation matrix (docs/api.md#credentials), generated from the schema: every root query,
every field of `Application`, every mutation and every subscription, called with a credential of
application A (its ADMIN key, its READ key, an End User token of A) and with another organization's
key, naming application B's objects. Each call must answer `NOT_FOUND` (or what the field's
contract below says), must not show any of B's data, and must change nothing of B (every row of B
compared before and after, and the ledger verified).

A and B belong to one organization, so only the application checks stand between them.

A field added to the schema is covered without touching this file; one whose arguments the
builder (tests/schema_operations.py) cannot fill fails here until it is mapped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from tortoise import Tortoise

from models.accounts import create_organization
from models.verify import verify_ledger
from models.webhook_events import enqueue_test
from models.webhooks import WebhookEventType, create_endpoint
from tests.graphql_client import (
    ALLOCATE,
    CONSUME,
    CREATE_API_KEY,
    CREATE_APPLICATION,
    PURCHASE,
    UPSERT,
    Caller,
)
from tests.ledger_helpers import EXCLUDED_MODELS, application_rows
from tests.schema_operations import (
    GeneratorGap,
    Operation,
    application_fields,
    known_coordinates,
    operations,
    root_fields,
)

# Fields whose arguments name nothing of another application: they cannot address B. They
# still run with every credential and must show nothing of B and change nothing of it.
UNADDRESSABLE = {
    "Query.viewer": "the caller itself",
    "Query.applications": "the applications the caller may see",
    "Mutation.createApplication": "creates an application in the caller's organization",
    "Mutation.exchangeTemporaryCode": "needs no credential: the code is the credential",
}
# Fields that answer null or an empty list, rather than NOT_FOUND, for a name that does not
# exist in the caller's application.
NULL_FOR_UNKNOWN = {
    "Application.pool": "pool keys are names (`ai` exists everywhere): an unknown key is null",
}
# A write on the caller's own application with a read-only credential is refused as
# FORBIDDEN before any other argument is looked at: the answer is the same whether B's
# objects exist or not, so it tells nothing of them.
READ_ONLY = {"A's READ key", "an End User token of A"}
# Rows that change without anyone asking: left out of the before/after comparison.


def matrix() -> list[tuple[str, str]]:
    """(kind, coordinate) of every field the matrix probes, read from the schema."""
    entries = [
        (kind, f"{kind.capitalize()}.{name}") for kind in ("query",) for name in root_fields(kind)
    ]
    entries += [("query", f"Application.{name}") for name in application_fields()]
    entries += [("mutation", f"Mutation.{name}") for name in root_fields("mutation")]
    entries += [("subscription", f"Subscription.{name}") for name in root_fields("subscription")]
    return entries


CREATE_POOL = """
mutation($input: CreateCreditPoolInput!) { createCreditPool(input: $input) { errors { code } } }"""
SET_THRESHOLD = """
mutation($input: SetLowBalanceThresholdInput!) {
  setLowBalanceThreshold(input: $input) { errors { code } }
}"""
ISSUE_TOKEN = """
mutation($input: IssueEndUserTokenInput!) { issueEndUserToken(input: $input) { token } }"""


@dataclass
class World:
    tag: str
    b: dict[str, object]  # kind of object -> B's
    credentials: dict[str, tuple[str, str]]  # label -> (secret, the caller's own application)
    b_application: int

    @property
    def canary(self) -> str:
        """In every name and email of B that a caller never sends: must never come back."""
        return f"canary-{self.tag}"


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def _key(org: Caller, application: str, role: str, name: str) -> dict[str, Any]:
    made = (
        await org(CREATE_API_KEY, input={"applicationId": application, "name": name, "role": role})
    )["createApiKey"]
    assert made["errors"] == []
    return made


@pytest.fixture(scope="module")
async def world(server, http: httpx.AsyncClient) -> World:
    """A and B in one organization; B has pools, packs, End Users with balances, an alert,
    API keys and a webhook endpoint with a delivery. C is the other organization's
    application."""
    tag = uuid.uuid4().hex[:8]
    canary = f"canary-{tag}"
    _, issued = await create_organization(f"isolation {tag}")
    org = Caller(http, server.graphql, issued.secret)

    async def application(caller: Caller, name: str) -> str:
        made = await caller(CREATE_APPLICATION, input={"name": name})
        return made["createApplication"]["application"]["id"]

    a, b = await application(org, f"a-{tag}"), await application(org, f"{canary}-app")
    a_admin = (await _key(org, a, "ADMIN", f"a-admin-{tag}"))["secret"]
    a_read = (await _key(org, a, "READ", f"a-read-{tag}"))["secret"]
    b_admin_key = await _key(org, b, "ADMIN", f"{canary}-admin")
    b_read_key = await _key(org, b, "READ", f"{canary}-read")
    admin = Caller(http, server.graphql, b_admin_key["secret"])
    pool = f"bpool{tag}"
    made = await admin(
        CREATE_POOL,
        input={"applicationId": b, "key": pool, "name": f"{canary} pool"},
    )
    assert made["createCreditPool"]["errors"] == []
    users = [
        {
            "externalId": f"b-{tag}-{i}",
            "name": f"{canary}-user{i}",
            "email": f"{canary}-{i}@example.com",
        }
        for i in range(2)
    ]
    upserted = await admin(UPSERT, input={"applicationId": b, "endUsers": users})
    b_user = upserted["upsertEndUsers"]["endUsers"][0]["id"]
    for key in ("ai", pool):
        await admin(PURCHASE, input={"applicationId": b, "pool": key, "credits": 1000})
        for user in users:
            allocated = await admin(
                ALLOCATE,
                input={
                    "applicationId": b,
                    "endUser": {"externalId": user["externalId"]},
                    "pool": key,
                    "credits": 100,
                },
            )
            assert allocated["allocateCredits"]["errors"] == []
    await admin(
        SET_THRESHOLD,
        input={"applicationId": b, "pool": "ai", "threshold": 95, "endUserDefault": True},
    )
    consumed = await admin(
        CONSUME,
        input={
            "applicationId": b,
            "endUser": {"id": b_user},
            "pool": "ai",
            "credits": 10,
            "feature": "f",
        },
    )
    assert consumed["consumeCredits"]["balance"]["status"] == "LOW"
    alerts = await admin(
        "query($id: ID!) { application(id: $id) { alerts(first: 1) { edges { node { id } } } } }",
        id=b,
    )
    alert = alerts["application"]["alerts"]["edges"][0]["node"]["id"]

    a_caller = Caller(http, server.graphql, a_admin)
    await a_caller(UPSERT, input={"applicationId": a, "endUsers": [{"externalId": f"a-{tag}"}]})
    token = (
        await a_caller(
            ISSUE_TOKEN,
            input={"applicationId": a, "endUser": {"externalId": f"a-{tag}"}},
        )
    )["issueEndUserToken"]["token"]
    endpoint = await create_endpoint(
        int(b), f"https://93.184.215.14/{canary}", [WebhookEventType.PACK_PURCHASED]
    )
    delivery = await enqueue_test(endpoint)
    _, other = await create_organization(f"isolation other {tag}")
    c = await application(Caller(http, server.graphql, other.secret), f"c-{tag}")
    return World(
        tag=tag,
        b={
            "application": b,
            "end_user": b_user,
            "external_id": users[0]["externalId"],
            "pool": pool,
            "alert": alert,
            "api_key": b_read_key["apiKey"]["id"],
            "key_prefix": b_admin_key["apiKey"]["keyId"],
            "webhook_endpoint": str(endpoint.id),
            "webhook_delivery": str(delivery),
        },
        credentials={
            "A's ADMIN key": (a_admin, a),
            "A's READ key": (a_read, a),
            "an End User token of A": (token, a),
            "another organization's key": (other.secret, c),
        },
        b_application=int(b),
    )


def _errors_codes(value: Any) -> list[str]:
    """Codes of every UserError in a payload (a batch has one list per result)."""
    if isinstance(value, dict):
        codes = [e["code"] for e in value.get("errors") or []]
        for key, child in value.items():
            if key != "errors":
                codes += _errors_codes(child)
        return codes
    if isinstance(value, list):
        return [code for item in value for code in _errors_codes(item)]
    return []


def _holds_nothing(value: Any) -> bool:
    """Nothing but refusals: every result is null, false, empty, or a typename."""
    if isinstance(value, dict):
        return all(
            key in ("errors", "__typename") or _holds_nothing(child) for key, child in value.items()
        )
    if isinstance(value, list):
        return all(_holds_nothing(item) for item in value)
    return value in (None, False)


def _at(data: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data


def judge(
    operation: Operation, status: int, body: dict[str, Any], accepted: frozenset[str]
) -> str | None:
    """What is wrong with an answer to an operation naming B's objects; None if nothing.
    `accepted`: the refusal codes the answer may carry (NOT_FOUND, see READ_ONLY)."""
    if status != 200:
        return f"HTTP {status}"
    errors = body.get("errors") or []
    codes = [(e.get("extensions") or {}).get("code") for e in errors]
    value = _at(body.get("data"), operation.path)
    if not operation.references:  # cannot address B: only the leak and change checks apply
        return f"error codes {codes}" if "INTERNAL" in codes else None
    if operation.kind == "mutation":
        if errors:
            return f"GraphQL errors {errors}"
        payload_codes = _errors_codes(value)
        if not payload_codes or not set(payload_codes) <= accepted:
            return f"payload errors {payload_codes}, expected {sorted(accepted)}"
        return None if _holds_nothing(value) else f"a result beside NOT_FOUND: {value}"
    if operation.coordinate in NULL_FOR_UNKNOWN and not errors:
        return None if value in (None, []) else f"expected null, got {value}"
    if not errors or set(codes) != {"NOT_FOUND"}:
        return f"error codes {codes}, expected NOT_FOUND"
    return None if value is None else f"a value beside NOT_FOUND: {value}"


def _variants(world: World, kind: str, coordinate: str, own: str) -> list[tuple[Operation, bool]]:
    """Everything of B's; and, when the field also names objects besides the application,
    the caller's own application with B's other objects (flagged True)."""
    owner, name = coordinate.split(".")
    steps = (
        [("Query", "application"), ("Application", name)]
        if owner == "Application"
        else [(owner, name)]
    )
    built = [(op, False) for op in operations(kind, steps, world.b)]
    references = set().union(*(op.references for op, _ in built))
    if references - {"application"} and "application" in references:
        built += [(op, True) for op in operations(kind, steps, {**world.b, "application": own})]
    return built


async def _http(
    http: httpx.AsyncClient, url: str, secret: str, operation: Operation
) -> tuple[int, str, dict]:
    response = await http.post(
        url,
        json={"query": operation.document, "variables": operation.variables},
        headers={"Authorization": f"Bearer {secret}"},
    )
    return response.status_code, response.text, response.json()


async def _subscription(url: str, secret: str, operation: Operation) -> tuple[int, str, dict]:
    """The first answer of the subscription over WebSocket (graphql-transport-ws), as an
    HTTP-like (status, text, body); no answer within 3 s is a failure of its own."""
    transport = WebsocketsTransport(
        url=url.replace("http", "ws", 1),
        init_payload={"authorization": f"Bearer {secret}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    async with Client(transport=transport) as session:
        request = GraphQLRequest(gql(operation.document), variable_values=operation.variables)
        try:
            async with asyncio.timeout(3):
                async for result in session.subscribe(request):
                    body = {"data": result}
                    return 200, str(result), body
        except TransportQueryError as error:
            body = {"errors": error.errors or [], "data": error.data}
            return 200, str(body), body
        except TimeoutError:
            return 0, "", {"errors": [{"message": "no answer in 3 s"}]}
    return 0, "", {"errors": [{"message": "the subscription ended without an answer"}]}


@pytest.mark.parametrize(("kind", "coordinate"), matrix(), ids=[c for _, c in matrix()])
async def test_a_credential_of_another_application_finds_nothing(
    server, http: httpx.AsyncClient, world: World, kind: str, coordinate: str
) -> None:
    problems: list[str] = []
    before = await application_rows(world.b_application)
    for label, (secret, own) in world.credentials.items():
        try:
            variants = _variants(world, kind, coordinate, own)
        except GeneratorGap as gap:
            pytest.fail(f"{coordinate}: the matrix cannot build it: {gap}")
        for operation, on_own_application in variants:
            if not operation.references and coordinate not in UNADDRESSABLE:
                pytest.fail(
                    f"{coordinate} names nothing of B: map its arguments in "
                    "tests/schema_operations.py or list it in UNADDRESSABLE"
                )
            if kind == "subscription":
                status, text, body = await _subscription(server.graphql, secret, operation)
            else:
                status, text, body = await _http(http, server.graphql, secret, operation)
            accepted = {"NOT_FOUND"}
            if on_own_application and label in READ_ONLY:
                accepted.add("FORBIDDEN")
            problem = judge(operation, status, body, frozenset(accepted))
            if world.canary in text:
                problem = f"shows B's data: {text[:300]}"
            if problem:
                problems.append(f"{label}, {operation.variables}: {problem}")
    assert not problems, f"{coordinate}:\n" + "\n".join(problems)
    assert await application_rows(world.b_application) == before, f"{coordinate} changed B"
    assert await verify_ledger() == []


def test_the_matrix_tables_name_fields_that_exist() -> None:
    """A stale entry (a renamed field) would silently exempt nothing: it fails instead."""
    from tests.schema_operations import NOT_REFERENCES, ONE_OF, REFERENCE_COORDINATES

    known = known_coordinates()
    stale = [
        c
        for c in [
            *UNADDRESSABLE,
            *NULL_FOR_UNKNOWN,
            *REFERENCE_COORDINATES,
            *NOT_REFERENCES,
            *ONE_OF,
        ]
        if c not in known
    ]
    assert stale == []
    assert {
        "Query.application",
        "Mutation.consumeCredits",
        "Subscription.balanceChanged",
        "Application.endUser",
    } <= {c for _, c in matrix()}
    models = set(Tortoise.apps["models"]) if Tortoise.apps else set()
    assert not models or EXCLUDED_MODELS <= models


async def test_the_snapshot_sees_a_change_of_b(world: World) -> None:
    """The before/after comparison can fail: a consumption by B's own key changes it."""
    before = await application_rows(world.b_application)
    assert {"CreditPool", "EndUser", "EndUserBalance", "LedgerEntry", "Alert", "ApiKey"} <= set(
        before
    )
    from models.ledger import consume_credits
    from models.references import EndUserRef

    await consume_credits(
        world.b_application, "ai", EndUserRef(external_id=str(world.b["external_id"])), 1, "f"
    )
    assert await application_rows(world.b_application) != before
