from models.end_users import EndUserInput, upsert_end_users
from models.expiry import expire_lots
from models.ledger import allocate_credits, consume_credits, purchase_credits, release_credits
from models.references import EndUserRef
from models.verify import verify_ledger


async def test_smoke(tenant):
    app = tenant.application_id
    users = await upsert_end_users(app, [EndUserInput("u1"), EndUserInput("u2")])
    p = await purchase_credits(app, "ai", 100)
    assert p.pool.purchased == 100
    b = await allocate_credits(app, "ai", EndUserRef(external_id="u1"), 30)
    assert b.balance.remaining == 30
    c = await consume_credits(
        app, "ai", EndUserRef(id=users[0].id), 5, "ai_generation", idempotency_key="k1"
    )
    assert c.balance.remaining == 25 and not c.replayed
    c2 = await consume_credits(
        app, "ai", EndUserRef(id=users[0].id), 5, "ai_generation", idempotency_key="k1"
    )
    assert c2.replayed and c2.balance == c.balance
    r = await release_credits(app, "ai", EndUserRef(external_id="u1"), 10)
    assert r.balance.remaining == 15
    await expire_lots()
    assert await verify_ledger() == []
