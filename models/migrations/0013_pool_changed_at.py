"""When each pool's balance took its current version (`credit_pool.changed_at`), so a
snapshot re-sent for a version carries that version's own time. Existing pools take the
time of their last ledger entry."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


async def stamp_pools(apps, schema_editor) -> None:
    await schema_editor.client.execute_script(
        "UPDATE credit_pool SET changed_at = (SELECT MAX(l.created_at) FROM ledger_entry l"
        " WHERE l.pool_id = credit_pool.id) WHERE version > 0"
    )


class Migration(migrations.Migration):
    dependencies = [("models", "0012_no_allocation_status")]

    initial = False

    operations = [
        ops.AddField(
            model_name="CreditPool",
            name="changed_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.RunPython(stamp_pools),
    ]
