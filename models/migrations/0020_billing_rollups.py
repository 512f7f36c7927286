"""Billing rollups: per lot and UTC day of `created_at`, the sums a billing period reads
(`billing_rollup_day`), and the End Users that consumed in each pool and UTC month of
`created_at` (`billing_active_month`), so that an open period reads a row per lot and day
and the tail instead of every entry booked in the month. The entries already folded are
summed here; the fold keeps them from then on, from a watermark of their own
(`billing_watermark`: a process of the previous version may still fold meanwhile)."""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

_TRUNCATED = {
    "postgres": {
        "day": "date_trunc('day', l.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        "month": "date_trunc('month', l.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    },
    "sqlite": {
        "day": "strftime('%Y-%m-%d 00:00:00+00:00', l.created_at)",
        "month": "strftime('%Y-%m-01 00:00:00+00:00', l.created_at)",
    },
}
_FOLDED = "l.created_at < (SELECT billing_watermark FROM rollup_state WHERE id = 1)"


async def sum_folded(apps, schema_editor) -> None:
    client = schema_editor.client
    truncated = _TRUNCATED["postgres" if client.capabilities.dialect == "postgres" else "sqlite"]
    # the billing rollups hold what was folded so far; a fold moving the watermark meanwhile
    # (a process of the previous version) leaves its entries to billing's tail
    await client.execute_script("UPDATE rollup_state SET billing_watermark = watermark WHERE id = 1")
    await client.execute_script(
        "INSERT INTO billing_rollup_day (pool_id, lot_id, day, changed, purchased, used,"
        f" expired, allocated, purchases) SELECT l.pool_id, l.lot_id, {truncated['day']},"
        " SUM(CASE WHEN l.kind IN ('CONSUME', 'EXPIRE', 'PURCHASE') THEN l.amount ELSE 0 END),"
        " SUM(CASE WHEN l.kind = 'PURCHASE' THEN l.amount ELSE 0 END),"
        " -SUM(CASE WHEN l.kind = 'CONSUME' THEN l.amount ELSE 0 END),"
        " -SUM(CASE WHEN l.kind = 'EXPIRE' THEN l.amount ELSE 0 END),"
        " SUM(CASE WHEN l.kind IN ('ALLOCATE', 'RELEASE') THEN l.amount ELSE 0 END),"
        " SUM(CASE WHEN l.kind = 'PURCHASE' THEN 1 ELSE 0 END)"
        f" FROM ledger_entry l WHERE l.lot_id IS NOT NULL AND {_FOLDED} GROUP BY 1, 2, 3"
    )
    await client.execute_script(
        "INSERT INTO billing_active_month (pool_id, month, end_user_id)"
        f" SELECT DISTINCT l.pool_id, {truncated['month']}, l.end_user_id FROM ledger_entry l"
        f" WHERE l.kind = 'CONSUME' AND l.end_user_id IS NOT NULL AND {_FOLDED}"
    )


class Migration(migrations.Migration):
    dependencies = [("models", "0019_request_volume")]

    initial = False

    operations = [
        ops.CreateModel(
            name="BillingRollupDay",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("pool_id", fields.BigIntField()),
                ("lot_id", fields.BigIntField()),
                ("day", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("changed", fields.BigIntField(default=0)),
                ("purchased", fields.BigIntField(default=0)),
                ("used", fields.BigIntField(default=0)),
                ("expired", fields.BigIntField(default=0)),
                ("allocated", fields.BigIntField(default=0)),
                ("purchases", fields.BigIntField(default=0)),
            ],
            options={"table": "billing_rollup_day", "app": "models", "unique_together": (("pool_id", "lot_id", "day"),), "indexes": [Index(fields=["pool_id", "day"])], "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="BillingActiveMonth",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("pool_id", fields.BigIntField()),
                ("month", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("end_user_id", fields.BigIntField()),
            ],
            options={"table": "billing_active_month", "app": "models", "unique_together": (("pool_id", "month", "end_user_id"),), "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.AddField(
            model_name="RollupState",
            name="billing_watermark",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.RunPython(sum_folded),
    ]
