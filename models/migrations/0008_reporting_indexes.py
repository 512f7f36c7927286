"""Reporting (issue 5): the ledger rollups of models/rollups.py and their state row.

No index is added to the ledger or the balances: the consume path keeps its writes as they
are. The rollups are written by the background fold only."""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


async def create_rollup_state(apps, schema_editor) -> None:
    """The fold's state row: nothing folded yet (every entry is in the tail)."""
    await schema_editor.client.execute_script(
        "INSERT INTO rollup_state (id, watermark, window_start)"
        " VALUES (1, '1970-01-01 00:00:00+00:00', '1970-01-01 00:00:00+00:00')"
    )


class Migration(migrations.Migration):
    dependencies = [("models", "0007_billing_periods")]

    initial = False

    operations = [
        ops.CreateModel(
            name='UsageRollup',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('pool_id', fields.BigIntField()),
                ('hour', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('feature', fields.CharField(max_length=100)),
                ('used', fields.BigIntField(default=0)),
                ('expired', fields.BigIntField(default=0)),
                ('purchased', fields.BigIntField(default=0)),
            ],
            options={'table': 'usage_rollup', 'app': 'models', 'unique_together': (('pool_id', 'hour', 'feature'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='EndUserWindowUsage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('end_user_id', fields.BigIntField()),
                ('pool_id', fields.BigIntField()),
                ('used', fields.BigIntField(default=0)),
            ],
            options={'table': 'end_user_window_usage', 'app': 'models', 'unique_together': (('end_user_id', 'pool_id'),), 'indexes': [Index(fields=['pool_id'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RollupState',
            fields=[
                ('id', fields.IntField(primary_key=True, unique=True, db_index=True)),
                ('watermark', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('window_start', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'rollup_state', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.RunPython(create_rollup_state),
    ]
