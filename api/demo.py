"""Demo data for `usagegraph serve --demo`: one organization with a believable Usage page."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from models.accounts import create_api_key, create_application, create_organization
from models.end_users import EndUserInput, upsert_end_users
from models.errors import InsufficientCredits
from models.ledger import allocate_credits, consume_credits, purchase_credits
from models.references import EndUserRef
from models.tenancy import ApiKeyRole, Application, Organization

DEMO_ORGANIZATION = "usagegraph demo"
END_USERS = 200
HISTORY_DAYS = 60
SPIKE_DAY = 12  # days ago


@dataclass(frozen=True)
class Demo:
    application_id: int
    api_key: str
    created: bool


async def seed_demo() -> Demo:
    """Seeds the demo once per database; every call issues a fresh ADMIN key for it."""
    organization = await Organization.get_or_none(name=DEMO_ORGANIZATION)
    if organization is not None:
        application = await Application.filter(organization_id=organization.id).first()
        assert application is not None
        issued = await create_api_key(
            organization.id, "demo key", ApiKeyRole.ADMIN, application_id=application.id
        )
        return Demo(application.id, issued.secret, created=False)
    organization, _ = await create_organization(DEMO_ORGANIZATION)
    application = await create_application(organization.id, "Acme Mail Studio", "Growth")
    app = application.id
    now = datetime.now(UTC)
    await purchase_credits(
        app,
        "ai",
        60_000,
        package="Growth monthly",
        reference="demo-order-1",
        expires_at=now + timedelta(days=5),
    )
    await purchase_credits(app, "ai", 100_000, package="AI credits 100k", reference="demo-order-2")
    await purchase_credits(
        app, "inbox_preview", 20_000, package="Preview pack", reference="demo-order-3"
    )
    users = await upsert_end_users(
        app,
        [
            EndUserInput(
                f"customer-{i:03d}", name=f"Customer {i:03d}", email=f"team{i:03d}@example.com"
            )
            for i in range(END_USERS)
        ],
    )
    rng = random.Random(7)
    for user in users:
        ref = EndUserRef(id=user.id)
        await allocate_credits(app, "ai", ref, rng.choice((200, 400, 600)))
        if rng.random() < 0.5:
            await allocate_credits(app, "inbox_preview", ref, rng.choice((20, 50)))
    # 60 days of consumption, quiet at weekends, with one visible spike.
    for days_ago in range(HISTORY_DAYS, 0, -1):
        day = now - timedelta(days=days_ago)
        count = 30 if day.weekday() < 5 else 10
        if days_ago == SPIKE_DAY:
            count *= 6
        for _ in range(count):
            user = rng.choice(users)
            pool, feature = rng.choice(
                (("ai", "ai_generation"), ("ai", "ai_rewrite"), ("inbox_preview", "inbox_preview"))
            )
            try:
                await consume_credits(
                    app,
                    pool,
                    EndUserRef(id=user.id),
                    rng.randint(1, 4),
                    feature,
                    occurred_at=day + timedelta(minutes=rng.randint(0, 1439)),
                )
            except InsufficientCredits:  # an End User without credits in that pool
                continue
    issued = await create_api_key(organization.id, "demo key", ApiKeyRole.ADMIN, application_id=app)
    return Demo(app, issued.secret, created=True)
