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
    keyed = await keyed_application(server, http)
    app_id, admin = keyed.id, keyed.admin
    await admin(
        PURCHASE, input={"applicationId": app_id, "pool": "ai", "credits": users * credits_each}
    )
    upserted = await admin(
        UPSERT,
        input={
            "applicationId": app_id,
            "endUsers": [{"externalId": f"u{i}"} for i in range(users)],
        },
    )
    ids = [u["id"] for u in upserted["upsertEndUsers"]["endUsers"]]
    for end_user_id in ids:
        result = await admin(
            ALLOCATE,
            input={
                "applicationId": app_id,
                "endUser": {"id": end_user_id},
                "pool": "ai",
                "credits": credits_each,
            },
        )
        assert result["allocateCredits"]["errors"] == []
    keyed.end_user_ids = ids
    return keyed


def consume_input(app: App, end_user: dict, credits: int = 1, **extra) -> dict:
    return {
        "applicationId": app.id,
        "endUser": end_user,
        "pool": "ai",
        "credits": credits,
        "feature": "ai_generation",
        **extra,
    }
