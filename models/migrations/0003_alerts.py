from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

from enum import StrEnum


# The values as they stood when this migration was written (a later change of the live
# enums is a later migration).
class AlertKind(StrEnum):
    LOW = "LOW"
    EXHAUSTED = "EXHAUSTED"
    RECOVERED = "RECOVERED"


class Migration(migrations.Migration):
    dependencies = [('models', '0002_integrity_rules')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Alert',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='alerts', on_delete=OnDelete.RESTRICT)),
                ('pool_id', fields.BigIntField()),
                ('end_user_id', fields.BigIntField(null=True)),
                ('kind', fields.CharEnumField(description='LOW: LOW\nEXHAUSTED: EXHAUSTED\nRECOVERED: RECOVERED', enum_type=AlertKind, max_length=16)),
                ('remaining', fields.BigIntField()),
                ('threshold', fields.BigIntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('acknowledged_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'alert', 'app': 'models', 'indexes': [Index(fields=['application_id', 'id'])], 'pk_attr': 'id', 'table_description': 'A low-credit alert (docs/balances.md#statuses), written in the transaction whose change moved a balance'},
            bases=['Model'],
        ),
    ]
