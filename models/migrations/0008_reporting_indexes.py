"""Reporting: the ledger rollups and balance report of models/rollups.py, their
state row, and the threshold-change marks (models/balance_report.py).

No index is added to the ledger or the balances: the consume path keeps its writes as they
are. The rollups and reports are written by the background fold only (the marks by the
threshold setters), so they carry the indexes the reports read through."""

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
        ops.CreateModel(
            name='UsageRollupDay',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('pool_id', fields.BigIntField()),
                ('day', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('feature', fields.CharField(max_length=100)),
                ('used', fields.BigIntField(default=0)),
                ('expired', fields.BigIntField(default=0)),
                ('purchased', fields.BigIntField(default=0)),
            ],
            options={'table': 'usage_rollup_day', 'app': 'models', 'unique_together': (('pool_id', 'day', 'feature'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='BalanceReport',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('end_user_id', fields.BigIntField()),
                ('pool_id', fields.BigIntField()),
                ('allocated', fields.BigIntField()),
                ('used', fields.BigIntField()),
                ('remaining', fields.BigIntField()),
                ('status', fields.CharField(max_length=16)),
                ('window_used', fields.BigIntField()),
                ('shortfall_class', fields.SmallIntField()),
                ('exhaustion', fields.FloatField(null=True)),
            ],
            options={'table': 'balance_report', 'app': 'models', 'unique_together': (('end_user_id', 'pool_id'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PoolReport',
            fields=[
                ('pool_id', fields.BigIntField(generated=False, primary_key=True, unique=True, db_index=True)),
                ('with_allocation', fields.BigIntField()),
                ('with_credits', fields.BigIntField()),
                ('low', fields.BigIntField()),
                ('exhausted', fields.BigIntField()),
                ('window_used', fields.BigIntField()),
                ('short_window_used', fields.BigIntField()),
                ('short_remaining', fields.BigIntField()),
            ],
            options={'table': 'pool_report', 'app': 'models', 'pk_attr': 'pool_id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ReportTouch',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('pool_id', fields.BigIntField()),
                ('end_user_id', fields.BigIntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'report_touch', 'app': 'models', 'indexes': [Index(fields=['pool_id', 'created_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        # The rankings' orders (ties by End User id) and the balances whose shortfall
        # depends on the time; same syntax on PostgreSQL and SQLite.
        ops.RunSQL(
            [
                "CREATE INDEX balance_report_by_used ON balance_report"
                " (pool_id, used DESC, end_user_id)",
                "CREATE INDEX balance_report_by_exhaustion ON balance_report"
                " (pool_id, exhaustion, end_user_id)",
                "CREATE INDEX balance_report_borderline ON balance_report (pool_id)"
                " WHERE shortfall_class = 2",
            ]
        ),
    ]
