"""The database itself refuses an overdraw and any change to a ledger entry (docs/ledger.md rule 2),
and verify reports a counter or a billing rollup that drifted from the ledger."""

from __future__ import annotations

import pytest
from tortoise import Tortoise
from tortoise.exceptions import OperationalError

from models.credits import CreditPool
from models.ledger import consume_credits
from models.records import LedgerEntry
from models.references import EndUserRef
from models.rollups import fold_usage, rebuild_rollups
from models.verify import verify_ledger
from tests.ledger_helpers import end_users_holding


async def _execute(statement: str) -> None:
    await Tortoise.get_connection("default").execute_query(statement)


async def test_ledger_entries_cannot_be_updated_or_deleted(tenant) -> None:
    await end_users_holding(tenant.application_id, count=1, credits_each=5)
    entry = await LedgerEntry.filter(application_id=tenant.application_id).first()
    assert entry is not None
    with pytest.raises(OperationalError, match="append-only"):
        await _execute(f"UPDATE ledger_entry SET amount = 1000 WHERE id = {entry.id}")
    with pytest.raises(OperationalError, match="append-only"):
        await _execute(f"DELETE FROM ledger_entry WHERE id = {entry.id}")
    assert (await LedgerEntry.get(id=entry.id)).amount == entry.amount


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE end_user_balance SET remaining = remaining - 6, used = used + 6",
        "UPDATE allocation SET remaining = remaining - 6, used = used + 6",
        "UPDATE end_user_balance SET remaining = remaining + 1",  # remaining != allocated - ...
        "UPDATE credit_pack SET unallocated = unallocated - 1000",
        "UPDATE credit_pool SET used = used + 1000",
        "UPDATE credit_pool SET purchased = 2147483648",
    ],
)
async def test_check_constraints_refuse_an_overdraw(tenant, statement: str) -> None:
    [user] = await end_users_holding(tenant.application_id, count=1, credits_each=5)
    pool = await CreditPool.get(application_id=tenant.application_id, key="ai")
    scope = "pool_id" if "credit_pool" not in statement else "id"
    with pytest.raises(OperationalError):
        await _execute(f"{statement} WHERE {scope} = {pool.id}")
    assert await verify_ledger() == []
    del user


async def test_verify_reports_a_counter_that_drifted(tenant) -> None:
    await end_users_holding(tenant.application_id, count=2, credits_each=5)
    pool = await CreditPool.get(application_id=tenant.application_id, key="ai")
    await _execute(f"UPDATE credit_pool SET allocated = allocated - 1 WHERE id = {pool.id}")
    try:
        problems = await verify_ledger()
        assert len(problems) == 1 and "allocated is 9, the ledger says 10" in problems[0]
    finally:
        await _execute(f"UPDATE credit_pool SET allocated = allocated + 1 WHERE id = {pool.id}")
    assert await verify_ledger() == []


async def test_verify_reports_a_billing_rollup_that_drifted(tenant) -> None:
    users = await end_users_holding(tenant.application_id, count=2, credits_each=5)
    pool = await CreditPool.get(application_id=tenant.application_id, key="ai")
    await fold_usage()
    mine = f"pool_id = {pool.id}"
    await _execute(f"UPDATE billing_rollup_day SET allocated = allocated - 1 WHERE {mine}")
    try:
        problems = await verify_ledger()
        assert len(problems) == 1 and "billing day" in problems[0], problems
        assert "allocated is 9, the ledger says 10" in problems[0]
    finally:
        await _execute(f"UPDATE billing_rollup_day SET allocated = allocated + 1 WHERE {mine}")
    await consume_credits(tenant.application_id, "ai", EndUserRef(id=users[0]), 1, "ai_generation")
    assert await verify_ledger() == []
    await fold_usage()
    await _execute(f"DELETE FROM billing_active_month WHERE {mine}")
    try:
        problems = await verify_ledger()
        assert len(problems) == 1 and "billing active End User" in problems[0], problems
    finally:
        await rebuild_rollups()
    assert await verify_ledger() == []


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # SQLite locks no rows
async def test_hot_append_only_tables_lock_no_counter_rows(backend) -> None:
    """Ledger, usage and outbox inserts must not take FOR KEY SHARE locks on the pool and
    lot rows the same transaction updates (the cause of a 5x slowdown under load)."""
    conn = Tortoise.get_connection("default")
    rows = await conn.execute_query_dict(
        "SELECT conrelid::regclass::text AS t FROM pg_constraint WHERE contype = 'f'"
        " AND conrelid::regclass::text IN ('ledger_entry', 'usage_event', 'outbox_event')"
    )
    assert rows == []


async def test_migrations_create_every_check_the_models_declare(backend) -> None:
    """The migrations keep their CHECKs frozen; the models must not declare one they lack."""
    from tortoise.migrations.constraints import CheckConstraint

    from models import credits

    connection = Tortoise.get_connection("default")
    if backend.postgres:
        _, rows = await connection.execute_query("SELECT conname FROM pg_constraint")
        found = {row["conname"] for row in rows}
    else:
        _, rows = await connection.execute_query(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        )
        found = {row["name"].rsplit("_", 1)[0] for row in rows}
    for model in (
        credits.CreditPool,
        credits.CreditPack,
        credits.EndUserBalance,
        credits.Allocation,
    ):
        for constraint in model._meta.constraints:
            if isinstance(constraint, CheckConstraint):
                assert constraint.name in found, constraint.name
