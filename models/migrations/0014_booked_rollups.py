"""The rollups keep, per pool and UTC hour (day) of `created_at`, the net change of the
pool's remaining the ledger booked (`booked`), so a series' `remaining` is the balance as
the ledger stood at each bucket's end. The entries already folded are summed here."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

_TRUNCATED = {
    "postgres": {
        "hour": "date_trunc('hour', l.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        "day": "date_trunc('day', l.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    },
    "sqlite": {
        "hour": "strftime('%Y-%m-%d %H:00:00+00:00', l.created_at)",
        "day": "strftime('%Y-%m-%d 00:00:00+00:00', l.created_at)",
    },
}


async def sum_booked(apps, schema_editor) -> None:
    client = schema_editor.client
    truncated = _TRUNCATED["postgres" if client.capabilities.dialect == "postgres" else "sqlite"]
    for table, period in (("usage_rollup", "hour"), ("usage_rollup_day", "day")):
        await client.execute_script(
            f"INSERT INTO {table} (pool_id, {period}, feature, used, expired, purchased, booked)"
            f" SELECT l.pool_id, {truncated[period]}, '', 0, 0, 0, SUM(l.amount)"
            " FROM ledger_entry l WHERE l.kind IN ('CONSUME', 'EXPIRE', 'PURCHASE')"
            " AND l.created_at < (SELECT watermark FROM rollup_state WHERE id = 1)"
            f" GROUP BY 1, 2 ON CONFLICT (pool_id, {period}, feature) DO UPDATE SET"
            " booked = excluded.booked"
        )


class Migration(migrations.Migration):
    dependencies = [("models", "0013_pool_changed_at")]

    initial = False

    operations = [
        ops.AddField(
            model_name="UsageRollup",
            name="booked",
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name="UsageRollupDay",
            name="booked",
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.RunPython(sum_booked),
    ]
