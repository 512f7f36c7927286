"""The request log: one table, no foreign keys (see models/request_log.py)."""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops
from enum import StrEnum


# The values as they stood when this migration was written (a later change of the live
# enums is a later migration).
class Outcome(StrEnum):
    OK = "OK"
    CLIENT_ERROR = "CLIENT_ERROR"
    AUTH_ERROR = "AUTH_ERROR"
    SERVER_ERROR = "SERVER_ERROR"


class LogSource(StrEnum):
    API = "api"
    INGEST = "ingest"


class Migration(migrations.Migration):
    dependencies = [("models", "0005_hot_updates")]

    initial = False

    operations = [
        ops.CreateModel(
            name='RequestLogEntry',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('application_id', fields.BigIntField(null=True)),
                ('organization_id', fields.BigIntField(null=True)),
                ('time', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('method', fields.CharField(max_length=16)),
                ('endpoint', fields.CharField(max_length=300)),
                ('operation_name', fields.CharField(null=True, max_length=200)),
                ('end_user_id', fields.BigIntField(null=True)),
                ('end_user_external_id', fields.CharField(null=True, max_length=200)),
                ('api_key_prefix', fields.CharField(null=True, max_length=32)),
                ('status', fields.SmallIntField()),
                ('outcome', fields.CharEnumField(description='OK: OK\nCLIENT_ERROR: CLIENT_ERROR\nAUTH_ERROR: AUTH_ERROR\nSERVER_ERROR: SERVER_ERROR', enum_type=Outcome, max_length=16)),
                ('error_code', fields.CharField(null=True, max_length=64)),
                ('error_message', fields.CharField(null=True, max_length=1000)),
                ('latency_ms', fields.FloatField()),
                ('request_id', fields.CharField(max_length=64)),
                ('source', fields.CharEnumField(description='API: api\nINGEST: ingest', enum_type=LogSource, max_length=16)),
            ],
            options={'table': 'request_log', 'app': 'models', 'indexes': [Index(fields=['application_id', 'time', 'id']), Index(fields=['application_id', 'outcome', 'time', 'id']), Index(fields=['application_id', 'end_user_id', 'time', 'id']), Index(fields=['application_id', 'api_key_prefix', 'time', 'id']), Index(fields=['application_id', 'endpoint', 'time', 'id']), Index(fields=['time'])], 'pk_attr': 'id', 'table_description': 'One request. `endpoint` is `METHOD /path`, and for GraphQL `POST /graphql` followed by'},
            bases=['Model'],
        ),
    ]
