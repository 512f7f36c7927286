"""The GraphQL contract over real HTTP (uvicorn), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from models.verify import verify_ledger
from tests.applications import App, application, consume_input
from tests.graphql_client import (
    ALLOCATE,
    APPLICATION,
    CONSUME,
    CREATE_API_KEY,
    END_USER,
    PURCHASE,
    UPSERT,
    Caller,
)


async def test_200_concurrent_consumptions_over_http(server, http) -> None:
    app = await application(server, http)
    targets = [app.end_user_ids[i % 10] for i in range(200)]
    random.shuffle(targets)

    results = await asyncio.gather(
        *(app.admin(CONSUME, input=consume_input(app, {"id": u})) for u in targets)
    )

    payloads = [r["consumeCredits"] for r in results]
    ok = [p for p in payloads if not p["errors"]]
    refused = [p for p in payloads if p["errors"]]
    assert len(ok) == 100 and len(refused) == 100
    assert {p["errors"][0]["code"] for p in refused} == {"INSUFFICIENT_CREDITS"}
    assert all(p["balance"] is None for p in refused)
    data = await app.reader(APPLICATION, id=app.id)
    ai = next(p for p in data["application"]["pools"] if p["key"] == "ai")
    assert ai == {
        "key": "ai",
        "purchased": 100,
        "allocated": 100,
        "used": 100,
        "remaining": 0,
        "expired": 0,
        "unallocated": 0,
        "status": "EXHAUSTED",
    }
    users = data["application"]["endUsers"]
    assert users["totalCount"] == 10
    for edge in users["edges"]:
        balance = next(b for b in edge["node"]["balances"] if b["pool"] == "ai")
        assert balance == {
            "pool": "ai",
            "allocated": 10,
            "used": 10,
            "remaining": 0,
            "status": "EXHAUSTED",
        }
    one = await app.reader(END_USER, id=app.id, externalId="u3")
    assert one["application"]["endUser"]["balance"] == {
        "allocated": 10,
        "used": 10,
        "remaining": 0,
        "status": "EXHAUSTED",
    }
    assert await verify_ledger() == []


async def test_50_concurrent_calls_with_one_key_over_http(server, http) -> None:
    app = await application(server, http, users=1, credits_each=100)
    key = f"k-{uuid.uuid4().hex}"
    results = await asyncio.gather(
        *(
            app.admin(
                CONSUME, input=consume_input(app, {"externalId": "u0"}, 2, idempotencyKey=key)
            )
            for _ in range(50)
        )
    )
    payloads = [r["consumeCredits"] for r in results]
    assert all(p["errors"] == [] for p in payloads)
    assert sum(p["replayed"] for p in payloads) == 49
    assert {p["balance"]["used"] for p in payloads} == {2}
    assert {p["balance"]["version"] for p in payloads} == {payloads[0]["balance"]["version"]}
    one = await app.reader(END_USER, id=app.id, externalId="u0")
    assert one["application"]["endUser"]["balance"]["used"] == 2


async def _ledger_state(app: App) -> dict:
    return await app.reader(APPLICATION, id=app.id)


BAD_CONSUME_INPUTS = [
    ("zero credits", {"credits": 0}, "VALIDATION"),
    ("negative credits", {"credits": -4}, "VALIDATION"),
    ("credits past the per-operation limit", {"credits": 1_000_000_001}, "VALIDATION"),
    ("unknown pool", {"pool": "gold"}, "NOT_FOUND"),
    ("unknown End User", {"endUser": {"externalId": "ghost"}}, "NOT_FOUND"),
    ("unknown End User id", {"endUser": {"id": "999999999"}}, "NOT_FOUND"),
    ("garbage End User id", {"endUser": {"id": "abc"}}, "NOT_FOUND"),
    ("both id and externalId", {"endUser": {"id": "1", "externalId": "u0"}}, "VALIDATION"),
    ("neither id nor externalId", {"endUser": {}}, "VALIDATION"),
    ("empty feature", {"feature": ""}, "VALIDATION"),
    ("more than held", {"credits": 11}, "INSUFFICIENT_CREDITS"),
    ("unknown application", {"applicationId": "987654321"}, "NOT_FOUND"),
]
GRAPHQL_INVALID_INPUTS = [
    ("credits past a GraphQL Int", {"credits": 3_000_000_000}),
    ("credits as a string", {"credits": "ten"}),
    ("credits as a float", {"credits": 1.5}),
    ("malformed DateTime", {"occurredAt": "yesterday-ish"}),
    ("missing feature", {"feature": None}),
    ("End User as a string", {"endUser": "u0"}),
]


@pytest.mark.parametrize(
    ("label", "change", "code"), BAD_CONSUME_INPUTS, ids=[c[0] for c in BAD_CONSUME_INPUTS]
)
async def test_bad_consume_input_is_a_typed_error(server, http, label, change, code) -> None:
    app = await application(server, http, users=1)
    before = await _ledger_state(app)
    response = await app.admin.raw(
        CONSUME, {"input": {**consume_input(app, {"externalId": "u0"}), **change}}
    )
    assert response.status_code == 200
    payload = response.json()["data"]["consumeCredits"]
    assert [e["code"] for e in payload["errors"]] == [code], payload
    assert payload["errors"][0]["message"]
    assert payload["balance"] is None
    assert await _ledger_state(app) == before


@pytest.mark.parametrize(
    ("label", "change"), GRAPHQL_INVALID_INPUTS, ids=[c[0] for c in GRAPHQL_INVALID_INPUTS]
)
async def test_ill_typed_input_is_a_graphql_error(server, http, label, change) -> None:
    app = await application(server, http, users=1)
    before = await _ledger_state(app)
    variables = {"input": {**consume_input(app, {"externalId": "u0"}), **change}}
    response = await app.admin.raw(CONSUME, variables)
    assert response.status_code < 500
    body = response.json()
    assert body.get("data") is None and body["errors"], body
    assert "Traceback" not in response.text
    assert await _ledger_state(app) == before


async def test_read_key_cannot_write(server, http) -> None:
    app = await application(server, http, users=1)
    before = await _ledger_state(app)
    for document, variables, field in (
        (CONSUME, {"input": consume_input(app, {"externalId": "u0"})}, "consumeCredits"),
        (
            PURCHASE,
            {"input": {"applicationId": app.id, "pool": "ai", "credits": 5}},
            "purchaseCredits",
        ),
        (
            ALLOCATE,
            {
                "input": {
                    "applicationId": app.id,
                    "endUser": {"externalId": "u0"},
                    "pool": "ai",
                    "credits": 1,
                }
            },
            "allocateCredits",
        ),
        (
            UPSERT,
            {"input": {"applicationId": app.id, "endUsers": [{"externalId": "x"}]}},
            "upsertEndUsers",
        ),
        (
            CREATE_API_KEY,
            {"input": {"applicationId": app.id, "name": "k", "role": "ADMIN"}},
            "createApiKey",
        ),
    ):
        body = (await app.reader.raw(document, variables)).json()
        assert [e["code"] for e in body["data"][field]["errors"]] == ["FORBIDDEN"], body
    assert await _ledger_state(app) == before


async def test_an_application_key_never_sees_another_application(server, http) -> None:
    mine = await application(server, http, users=1)
    theirs = await application(server, http, users=1)
    theirs_before = await _ledger_state(theirs)

    body = (await mine.admin.raw(APPLICATION, {"id": theirs.id})).json()
    assert body["data"]["application"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    body = (await mine.admin.raw(END_USER, {"id": theirs.id, "externalId": "u0"})).json()
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # Their End User's id, named through my application, is nobody in mine.
    payload = (
        await mine.admin(CONSUME, input=consume_input(mine, {"id": theirs.end_user_ids[0]}))
    )["consumeCredits"]
    assert [e["code"] for e in payload["errors"]] == ["NOT_FOUND"]
    for document, variables, field in (
        (CONSUME, {"input": consume_input(theirs, {"externalId": "u0"})}, "consumeCredits"),
        (
            PURCHASE,
            {"input": {"applicationId": theirs.id, "pool": "ai", "credits": 5}},
            "purchaseCredits",
        ),
        (
            UPSERT,
            {"input": {"applicationId": theirs.id, "endUsers": [{"externalId": "x"}]}},
            "upsertEndUsers",
        ),
    ):
        body = (await mine.admin.raw(document, variables)).json()
        assert [e["code"] for e in body["data"][field]["errors"]] == ["NOT_FOUND"], body
    listed = await mine.admin("{ applications { id } }")
    assert listed["applications"] == [{"id": mine.id}]
    assert await _ledger_state(theirs) == theirs_before


async def test_bad_and_revoked_keys_are_refused(server, http) -> None:
    app = await application(server, http, users=1)
    made = await app.organization(
        CREATE_API_KEY, input={"applicationId": app.id, "name": "temp", "role": "ADMIN"}
    )
    key = made["createApiKey"]["secret"]
    temp = Caller(http, server.graphql, key)
    assert (await temp("{ viewer { role } }"))["viewer"]["role"] == "ADMIN"
    from tests.graphql_client import REVOKE_API_KEY

    revoked = await app.organization(REVOKE_API_KEY, id=made["createApiKey"]["apiKey"]["id"])
    assert revoked["revokeApiKey"]["apiKey"]["revokedAt"]
    for credential in (key, key[:-2] + "xx", "ug_nope_nope", "not-a-key", None):
        response = await Caller(http, server.graphql, credential).raw("{ viewer { role } }")
        assert response.status_code == 401, (credential, response.text)
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_graphiql_is_served_to_a_browser(server, http) -> None:
    response = await http.get(server.graphql, headers={"Accept": "text/html"})
    assert response.status_code == 200 and "graphiql" in response.text.lower()


async def test_a_gql_client_reads_the_viewer(server) -> None:
    """The API through an existing GraphQL client library (gql over HTTP)."""
    from gql import Client, gql
    from gql.transport.httpx import HTTPXAsyncTransport

    transport = HTTPXAsyncTransport(
        url=server.graphql, headers={"Authorization": f"Bearer {server.organization_key}"}
    )
    async with Client(transport=transport) as session:
        result = await session.execute(
            gql("{ viewer { role organization { name } application { id } } }")
        )
    assert result["viewer"] == {
        "role": "ADMIN",
        "organization": {"name": "HTTP tests"},
        "application": None,
    }


BATCH = """
mutation($input: ConsumeCreditsBatchInput!) {
  consumeCreditsBatch(input: $input) {
    results { balance { pool used remaining } replayed errors { code message } }
    errors { code message }
  }
}"""


async def test_consume_credits_batch_over_http(server, http) -> None:
    app = await application(server, http, users=2, credits_each=3)
    items = [
        {"endUser": {"externalId": "u0"}, "pool": "ai", "credits": 2, "feature": "ai_generation"},
        {"endUser": {"externalId": "u0"}, "pool": "ai", "credits": 2, "feature": "ai_generation"},
        {"endUser": {"externalId": "u1"}, "pool": "ai", "credits": 3, "feature": "ai_rewrite",
         "idempotencyKey": "b-1"},
        {"endUser": {"externalId": "ghost"}, "pool": "ai", "credits": 1, "feature": "x"},
    ]  # fmt: skip
    data = await app.admin(BATCH, input={"applicationId": app.id, "consumptions": items})
    results = data["consumeCreditsBatch"]["results"]
    assert [r["errors"][0]["code"] if r["errors"] else "OK" for r in results] == [
        "OK", "INSUFFICIENT_CREDITS", "OK", "NOT_FOUND",
    ]  # fmt: skip
    assert results[0]["balance"] == {"pool": "ai", "used": 2, "remaining": 1}
    too_many = await app.admin(
        BATCH, input={"applicationId": app.id, "consumptions": [items[0]] * 1001}
    )
    assert [e["code"] for e in too_many["consumeCreditsBatch"]["errors"]] == ["VALIDATION"]
    read_only = await app.reader(BATCH, input={"applicationId": app.id, "consumptions": items})
    assert [e["code"] for e in read_only["consumeCreditsBatch"]["errors"]] == ["FORBIDDEN"]


PAGE = """
query($id: ID!, $after: String) {
  application(id: $id) {
    endUsers(first: 2, after: $after) {
      totalCount pageInfo { hasNextPage endCursor } edges { cursor node { externalId } }
    }
  }
}"""


async def test_end_users_page_by_cursor(server, http) -> None:
    app = await application(server, http, users=5, credits_each=1)
    seen: list[str] = []
    after = None
    while True:
        page = (await app.reader(PAGE, id=app.id, after=after))["application"]["endUsers"]
        assert page["totalCount"] == 5
        seen += [edge["node"]["externalId"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"u{i}" for i in range(5)]
    body = (await app.reader.raw(PAGE, {"id": app.id, "after": "not-a-cursor"})).json()
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION"


async def test_query_limits_refuse_deep_and_wide_documents(server, http) -> None:
    app = await application(server, http, users=1)
    deep = "{ viewer { application { " + "pools { key } " + "} } }"
    nested = "{ viewer " + "{ application " * 15 + "{ id }" + " }" * 15 + " }"
    aliases = "{ " + " ".join(f"a{i}: viewer {{ role }}" for i in range(100)) + " }"
    assert (await app.reader(deep))["viewer"]["application"]["pools"]
    for document, expected in ((nested, "maximum operation depth"), (aliases, "aliases")):
        response = await app.reader.raw(document)
        assert response.status_code < 500
        messages = [e["message"] for e in response.json()["errors"]]
        assert any(expected in m for m in messages), messages
