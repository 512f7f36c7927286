"""The number of requests per application, UTC hour and outcome as deltas written by
triggers on `request_log` (`models.request_log.RequestVolume`), on PostgreSQL: the request
volume reads a row per hour and outcome instead of every logged request. The requests
already logged are counted once here. (SQLite, the embedded default, keeps counting the log.)"""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

_HOUR = "date_trunc('hour', \"time\" AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_POSTGRES = [
    "CREATE OR REPLACE FUNCTION request_log_inserted() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO request_volume (application_id, hour, outcome, requests, merged)"
    f" SELECT application_id, {_HOUR}, outcome, COUNT(*), FALSE FROM inserted"
    " WHERE application_id IS NOT NULL GROUP BY 1, 2, 3;"
    " RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION request_log_deleted() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO request_volume (application_id, hour, outcome, requests, merged)"
    f" SELECT application_id, {_HOUR}, outcome, -COUNT(*), FALSE FROM deleted"
    " WHERE application_id IS NOT NULL GROUP BY 1, 2, 3;"
    " RETURN NULL; END $$",
    # once per statement: a batch of logged requests (COPY included) writes a row per hour
    # and outcome it holds
    "CREATE TRIGGER request_log_inserted AFTER INSERT ON request_log"
    " REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION request_log_inserted()",
    "CREATE TRIGGER request_log_deleted AFTER DELETE ON request_log"
    " REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION request_log_deleted()",
    # the deltas a merge has still to fold, found without reading the merged rows
    "CREATE INDEX request_volume_unmerged ON request_volume (application_id, hour, outcome)"
    " WHERE NOT merged",
    "INSERT INTO request_volume (application_id, hour, outcome, requests, merged)"
    f" SELECT application_id, {_HOUR}, outcome, COUNT(*), TRUE FROM request_log"
    " WHERE application_id IS NOT NULL GROUP BY 1, 2, 3",
]


async def count_requests(apps, schema_editor) -> None:
    client = schema_editor.client
    if client.capabilities.dialect == "postgres":
        for statement in _POSTGRES:
            await client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [("models", "0018_balance_report_page_orders")]

    initial = False

    operations = [
        ops.CreateModel(
            name="RequestVolume",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("application_id", fields.BigIntField()),
                ("hour", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("outcome", fields.CharField(max_length=16)),
                ("requests", fields.BigIntField()),
                ("merged", fields.BooleanField(default=False)),
            ],
            options={"table": "request_volume", "app": "models", "indexes": [Index(fields=["application_id", "hour"])], "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.RunPython(count_requests),
    ]
