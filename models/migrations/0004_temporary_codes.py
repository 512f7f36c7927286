from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0003_alerts')]

    initial = False

    operations = [
        ops.CreateModel(
            name='TemporaryCode',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('code_hash', fields.CharField(unique=True, max_length=64)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='temporary_codes', on_delete=OnDelete.RESTRICT)),
                ('end_user_id', fields.BigIntField()),
                ('token_ttl_seconds', fields.IntField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'temporary_code', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A one-time, short-lived code a widget exchanges for an End User token. Only a hash'},
            bases=['Model'],
        ),
    ]
