"""Billing periods: one closed record per application and month, never changed."""

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.migrations import operations as ops

TABLE = "billing_period"


async def make_records_immutable(apps, schema_editor) -> None:
    """A closed period never changes: refuse UPDATE and DELETE, as for ledger entries."""
    client = schema_editor.client
    if client.capabilities.dialect == "postgres":
        statements = [
            "CREATE OR REPLACE FUNCTION billing_period_immutable() RETURNS trigger"
            " LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'closed billing periods never change' USING ERRCODE = '23514';"
            " END $$",
            f'CREATE TRIGGER billing_period_immutable BEFORE UPDATE OR DELETE ON "{TABLE}"'
            " FOR EACH ROW EXECUTE FUNCTION billing_period_immutable()",
        ]
    else:
        statements = [
            f'CREATE TRIGGER "billing_period_no_{event.lower()}" BEFORE {event} ON "{TABLE}"'
            " BEGIN SELECT RAISE(ABORT, 'closed billing periods never change'); END"
            for event in ("UPDATE", "DELETE")
        ]
    for statement in statements:
        await client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [("models", "0006_request_log")]

    initial = False

    operations = [
        ops.CreateModel(
            name='BillingPeriodRecord',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='billing_periods', on_delete=OnDelete.RESTRICT)),
                ('period_start', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('period_end', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('closed_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('figures', fields.JSONField()),
            ],
            options={'table': TABLE, 'app': 'models', 'unique_together': (('application', 'period_start'),), 'pk_attr': 'id', 'table_description': "A closed period's figures as written at closing (never updated: a trigger refuses it)."},
            bases=['Model'],
        ),
        ops.RunPython(make_records_immutable),
    ]
