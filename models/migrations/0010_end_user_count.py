"""The number of End Users per application as deltas written by triggers on `end_user`
(`models.rollups.EndUserCount`): reports read a few rows instead of counting every End User.
Existing End Users are counted once here."""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

_POSTGRES = [
    "CREATE OR REPLACE FUNCTION end_user_inserted() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO end_user_count (application_id, delta)"
    " SELECT application_id, COUNT(*) FROM inserted GROUP BY application_id;"
    " RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION end_user_deleted() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO end_user_count (application_id, delta)"
    " SELECT application_id, -COUNT(*) FROM deleted GROUP BY application_id;"
    " RETURN NULL; END $$",
    # once per statement: an upsert of 1,000 End Users writes one row (only the rows it
    # inserted are in its transition table, not those ON CONFLICT updated)
    "CREATE TRIGGER end_user_inserted AFTER INSERT ON end_user"
    " REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION end_user_inserted()",
    "CREATE TRIGGER end_user_deleted AFTER DELETE ON end_user"
    " REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION end_user_deleted()",
]
_SQLITE = [
    "CREATE TRIGGER end_user_inserted AFTER INSERT ON end_user BEGIN"
    " INSERT INTO end_user_count (application_id, delta) VALUES (NEW.application_id, 1); END",
    "CREATE TRIGGER end_user_deleted AFTER DELETE ON end_user BEGIN"
    " INSERT INTO end_user_count (application_id, delta) VALUES (OLD.application_id, -1); END",
]


async def count_end_users(apps, schema_editor) -> None:
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    for statement in [
        *(_POSTGRES if postgres else _SQLITE),
        "INSERT INTO end_user_count (application_id, delta)"
        " SELECT application_id, COUNT(*) FROM end_user GROUP BY application_id",
    ]:
        await client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [("models", "0009_outbox_deleted_on_publish")]

    initial = False

    operations = [
        ops.CreateModel(
            name="EndUserCount",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("application_id", fields.BigIntField()),
                ("delta", fields.BigIntField()),
            ],
            options={"table": "end_user_count", "app": "models", "indexes": [Index(fields=["application_id"])], "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.RunPython(count_end_users),
    ]
