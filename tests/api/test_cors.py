"""CORS on HTTP: the origins of USAGEGRAPH_ALLOWED_ORIGINS may call the API from a browser
page (a widget exchanging a temporary code), no other origin, and none by default."""

from __future__ import annotations

import httpx

from models.accounts import create_organization
from tests.applications import application
from tests.conftest import Server
from tests.demo_server import served
from tests.graphql_client import CREATE_CODE, EXCHANGE, Caller

WIDGET = "https://widget.example"
OTHER = "https://other.example"


def _preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }


async def test_no_origin_is_allowed_by_default(server) -> None:
    async with httpx.AsyncClient() as http:
        preflight = await http.options(server.graphql, headers=_preflight(WIDGET))
        answered = await http.post(
            server.graphql,
            json={"query": "{ __typename }"},
            headers={"origin": WIDGET},
        )
    assert "access-control-allow-origin" not in preflight.headers
    assert answered.status_code == 200
    assert "access-control-allow-origin" not in answered.headers


async def test_a_widget_on_an_allowed_origin_exchanges_a_temporary_code(backend) -> None:
    # written as a person might: browsers send the origin lowercase, without the default port
    allowed = {"USAGEGRAPH_ALLOWED_ORIGINS": ["https://Widget.example:443"]}
    async with served(backend, **allowed) as (url, _), httpx.AsyncClient() as http:
        _, issued = await create_organization("CORS")
        server = Server(url=url, organization_key=issued.secret)
        app = await application(server, http, users=1)
        made = await app.admin(
            CREATE_CODE, input={"applicationId": app.id, "endUser": {"externalId": "u0"}}
        )
        code = made["createTemporaryCode"]["code"]

        preflight = await http.options(server.graphql, headers=_preflight(WIDGET))
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == WIDGET
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed_headers = preflight.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type"} <= set(allowed_headers.replace(" ", "").split(","))
        assert "access-control-allow-credentials" not in preflight.headers

        exchanged = await http.post(
            server.graphql,
            json={"query": EXCHANGE, "variables": {"code": code}},
            headers={"origin": WIDGET},
        )
        assert exchanged.headers["access-control-allow-origin"] == WIDGET
        assert "x-request-id" in exchanged.headers["access-control-expose-headers"]
        token = exchanged.json()["data"]["exchangeTemporaryCode"]["token"]
        assert (await Caller(http, server.graphql, token)("{ viewer { role } }")) == {
            "viewer": {"role": "READ"}
        }

        refused = await http.options(server.graphql, headers=_preflight(OTHER))
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        other = await http.post(
            server.graphql, json={"query": "{ __typename }"}, headers={"origin": OTHER}
        )
        assert "access-control-allow-origin" not in other.headers
