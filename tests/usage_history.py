"""An application with a varied credit history, made over HTTP, for the billing and export
tests: several packages in two pools, allocations, releases, consumptions (some back-dated,
some sharing one occurredAt, one with metadata)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from models.ledger import consume_credits
from models.references import EndUserRef
from tests.graphql_client import (
    ALLOCATE,
    CONSUME,
    CREATE_API_KEY,
    CREATE_APPLICATION,
    PURCHASE,
    RELEASE,
    UPSERT,
    Caller,
)


@dataclass
class HttpApp:
    id: str
    name: str
    admin: Caller
    reader: Caller
    organization: Caller
    admin_key: str
    end_user_ids: list[str]

    @property
    def row_id(self) -> int:
        return int(self.id)


async def new_application(server: Any, http: httpx.AsyncClient) -> HttpApp:
    org = Caller(http, server.graphql, server.organization_key)
    name = f"billing-{uuid.uuid4().hex[:6]}"
    created = await org(CREATE_APPLICATION, input={"name": name})
    app_id = created["createApplication"]["application"]["id"]
    keys = {}
    for role in ("ADMIN", "READ"):
        made = await org(
            CREATE_API_KEY, input={"applicationId": app_id, "name": role, "role": role}
        )
        keys[role] = made["createApiKey"]["secret"]
    admin = Caller(http, server.graphql, keys["ADMIN"])
    reader = Caller(http, server.graphql, keys["READ"])
    return HttpApp(app_id, name, admin, reader, org, keys["ADMIN"], [])


async def purchase(app: HttpApp, pool: str, credits: int, package: str | None = None) -> None:
    result = await app.admin(
        PURCHASE,
        input={"applicationId": app.id, "pool": pool, "credits": credits, "package": package},
    )
    assert result["purchaseCredits"]["errors"] == []


async def allocate(app: HttpApp, user: str, pool: str, credits: int, release: bool = False) -> None:
    document, name = (RELEASE, "releaseCredits") if release else (ALLOCATE, "allocateCredits")
    result = await app.admin(
        document,
        input={"applicationId": app.id, "endUser": {"id": user}, "pool": pool, "credits": credits},
    )
    assert result[name]["errors"] == []


async def consume(
    app: HttpApp,
    user: str,
    pool: str,
    credits: int,
    feature: str = "ai_generation",
    occurred_at: datetime | None = None,
) -> None:
    extra = {"occurredAt": occurred_at.isoformat()} if occurred_at else {}
    result = await app.admin(
        CONSUME,
        input={
            "applicationId": app.id,
            "endUser": {"id": user},
            "pool": pool,
            "credits": credits,
            "feature": feature,
            **extra,
        },
    )
    assert result["consumeCredits"]["errors"] == [], result


async def record_history(app: HttpApp) -> HttpApp:
    """Purchases in two pools under three packages (and none), four End Users, allocations
    drawn across packages, a release, and consumptions with back-dated and equal times."""
    await purchase(app, "ai", 150, "Starter")
    await purchase(app, "ai", 500, "Growth")
    await purchase(app, "ai", 200)
    await purchase(app, "inbox_preview", 300, "Starter")
    upserted = await app.admin(
        UPSERT,
        input={"applicationId": app.id, "endUsers": [{"externalId": f"u{i}"} for i in range(4)]},
    )
    app.end_user_ids = [u["id"] for u in upserted["upsertEndUsers"]["endUsers"]]
    u0, u1, u2, u3 = app.end_user_ids
    for user in app.end_user_ids:
        await allocate(app, user, "ai", 100)  # 150 from Starter, then 250 from Growth
    await allocate(app, u0, "inbox_preview", 50)
    await allocate(app, u3, "ai", 40, release=True)
    same_time = datetime.now(UTC).replace(microsecond=123456) - timedelta(hours=1)
    await consume(app, u0, "ai", 10)
    await consume(app, u1, "ai", 5, "ai_rewrite", datetime.now(UTC) - timedelta(days=3))
    await consume(app, u2, "ai", 7, occurred_at=same_time)
    await consume(app, u1, "ai", 2, occurred_at=same_time)
    await consume(app, u0, "inbox_preview", 3, "inbox_preview")
    await consume_credits(
        app.row_id,
        "ai",
        EndUserRef(id=int(u2)),
        4,
        "ai_generation",
        metadata={"campaign": 'spring, "sale"', "lines": "a\nb"},
        occurred_at=same_time,
    )
    return app
