"""End User tokens and temporary codes (docs/api.md#credentials): a widget reads one End User's
balances."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tortoise import Tortoise

from models.end_user_tokens import sign_token
from tests.applications import application, consume_input
from tests.graphql_client import CONSUME, CREATE_CODE, EXCHANGE, ISSUE, Caller
from tests.subscribing import next_event, subscribed

MY_BALANCES = """
query($id: ID!, $externalId: String!) {
  viewer { role apiKey { id } endUser { externalId balances { pool remaining } } }
  application(id: $id) { endUser(externalId: $externalId) { balance(pool: "ai") { remaining } } }
}"""
POOLS = "query($id: ID!) { application(id: $id) { pools { key } } }"
OTHER = """
query($id: ID!, $externalId: String!) {
  application(id: $id) { endUser(externalId: $externalId) { id } }
}"""


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def test_a_token_reads_and_watches_its_own_balance_only(server, http) -> None:
    app = await application(server, http, users=2, credits_each=10)
    issued = await app.reader(
        ISSUE, input={"applicationId": app.id, "endUser": {"externalId": "u0"}}
    )
    token = issued["issueEndUserToken"]["token"]
    assert token.startswith("ugt_") and issued["issueEndUserToken"]["errors"] == []
    widget = Caller(http, server.graphql, token)

    mine = await widget(MY_BALANCES, id=app.id, externalId="u0")
    assert mine["viewer"]["role"] == "READ" and mine["viewer"]["apiKey"] is None
    assert mine["viewer"]["endUser"]["externalId"] == "u0"
    assert mine["application"]["endUser"]["balance"] == {"remaining": 10}
    for document, variables in (
        (OTHER, {"id": app.id, "externalId": "u1"}),
        (POOLS, {"id": app.id}),
    ):
        body = (await widget.raw(document, variables)).json()
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body
    refused = await widget(CONSUME, input=consume_input(app, {"externalId": "u0"}))
    assert [e["code"] for e in refused["consumeCredits"]["errors"]] == ["FORBIDDEN"]
    minted = await widget(ISSUE, input={"applicationId": app.id, "endUser": {"externalId": "u0"}})
    assert [e["code"] for e in minted["issueEndUserToken"]["errors"]] == ["NOT_FOUND"]

    async with subscribed(server.graphql, token, app=app.id, pool="ai") as events:
        assert (await next_event(events))["remaining"] == 10
        await app.admin(CONSUME, input=consume_input(app, {"externalId": "u1"}))  # not mine
        await app.admin(CONSUME, input=consume_input(app, {"externalId": "u0"}, 3))
        event = await next_event(events)
        assert (event["remaining"], event["endUserId"]) == (7, app.end_user_ids[0])
    async with subscribed(server.graphql, token, app=app.id, endUser=app.end_user_ids[1]) as events:
        with pytest.raises(Exception) as caught:
            await next_event(events)
        assert "NOT_FOUND" in str(caught.value.errors)  # type: ignore[attr-defined]


async def test_temporary_codes_work_once(server, http, backend) -> None:
    app = await application(server, http, users=1)
    made = await app.admin(
        CREATE_CODE, input={"applicationId": app.id, "endUser": {"externalId": "u0"}}
    )
    code = made["createTemporaryCode"]["code"]
    anonymous = Caller(http, server.graphql, None)
    exchanged = await anonymous(EXCHANGE, code=code)
    token = exchanged["exchangeTemporaryCode"]["token"]
    assert token and exchanged["exchangeTemporaryCode"]["errors"] == []
    assert (await Caller(http, server.graphql, token)("{ viewer { role } }"))["viewer"][
        "role"
    ] == "READ"

    again = await anonymous(EXCHANGE, code=code)
    assert [e["code"] for e in again["exchangeTemporaryCode"]["errors"]] == ["EXPIRED"]
    unknown = await anonymous(EXCHANGE, code="no-such-code")
    assert [e["code"] for e in unknown["exchangeTemporaryCode"]["errors"]] == ["NOT_FOUND"]

    stale = (
        await app.admin(
            CREATE_CODE, input={"applicationId": app.id, "endUser": {"externalId": "u0"}}
        )
    )["createTemporaryCode"]["code"]
    await Tortoise.get_connection("default").execute_query(
        "UPDATE temporary_code SET expires_at = '2000-01-01 00:00:00+00:00' WHERE used_at IS NULL"
    )
    late = await anonymous(EXCHANGE, code=stale)
    assert [e["code"] for e in late["exchangeTemporaryCode"]["errors"]] == ["EXPIRED"]

    # Nothing else answers without a credential.
    response = await anonymous.raw("{ viewer { role } }")
    assert response.status_code == 401


async def test_expired_and_forged_tokens_are_refused(server, http, backend) -> None:
    app = await application(server, http, users=1)
    expired = sign_token(backend.settings.secret, int(app.id), int(app.end_user_ids[0]), -60)
    forged = sign_token(
        "another secret of thirty-two or more bytes", int(app.id), int(app.end_user_ids[0]), 600
    )
    for token in (expired.token, forged.token, "ugt_garbage"):
        response = await Caller(http, server.graphql, token).raw("{ viewer { role } }")
        assert response.status_code == 401, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
