"""Applications made over the API for the HTTP and WebSocket tests, and their consumptions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx

from tests.graphql_client import (
    ALLOCATE,
    CREATE_API_KEY,
    CREATE_APPLICATION,
    PURCHASE,
    UPSERT,
    Caller,
)


@dataclass
class App:
    id: str
    admin: Caller
    reader: Caller
    organization: Caller
    end_user_ids: list[str]


async def keyed_application(server, http: httpx.AsyncClient) -> App:
    """A new application with an ADMIN and a READ key, and nothing booked."""
    org = Caller(http, server.graphql, server.organization_key)
    created = await org(CREATE_APPLICATION, input={"name": f"app-{uuid.uuid4().hex[:6]}"})
    app_id = created["createApplication"]["application"]["id"]
    keys = {}
    for role in ("ADMIN", "READ"):
        made = await org(
            CREATE_API_KEY, input={"applicationId": app_id, "name": role, "role": role}
        )
        assert made["createApiKey"]["errors"] == []
        keys[role] = made["createApiKey"]["secret"]
    admin = Caller(http, server.graphql, keys["ADMIN"])
    return App(app_id, admin, Caller(http, server.graphql, keys["READ"]), org, [])


async def application(
    server, http: httpx.AsyncClient, users: int = 10, credits_each: int = 10
) -> App:
    app = await keyed_application(server, http)
    app.end_user_ids = await book(app, users, users * credits_each, credits_each)
    return app


def consume_input(app: App, end_user: dict, credits: int = 1, **extra) -> dict:
    return {
        "applicationId": app.id,
        "endUser": end_user,
        "pool": "ai",
        "credits": credits,
        "feature": "ai_generation",
        **extra,
    }


async def book(app: App, users: int = 1, credits: int = 100, each: int = 10) -> list[str]:
    """Buys `credits` in pool `ai`, makes End Users u0, u1... and allocates `each` to each
    of them (none for 0); their ids."""
    await app.admin(PURCHASE, input={"applicationId": app.id, "pool": "ai", "credits": credits})
    upserted = await app.admin(
        UPSERT,
        input={
            "applicationId": app.id,
            "endUsers": [{"externalId": f"u{i}"} for i in range(users)],
        },
    )
    ids = [u["id"] for u in upserted["upsertEndUsers"]["endUsers"]]
    for end_user_id in ids if each else []:
        result = await app.admin(ALLOCATE, input=allocation(app, end_user_id, each))
        assert result["allocateCredits"]["errors"] == []
    return ids


def allocation(app: App, end_user_id: str, credits: int) -> dict:
    return {
        "applicationId": app.id,
        "endUser": {"id": end_user_id},
        "pool": "ai",
        "credits": credits,
    }
