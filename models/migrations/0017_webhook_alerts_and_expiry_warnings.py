"""Alerts that belong to no pool: an alert may name a webhook endpoint instead (the one it
says was disabled for failing), with neither pool nor remaining credits; its kind needs a
longer column. SQLite rebuilds the table to drop NOT NULL, without its index: it is made
again. A lot records when its coming expiry was announced (`expiry_warned_at`)."""

from enum import StrEnum

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


# The values as they stood when this migration was written.
class AlertKind(StrEnum):
    LOW = "LOW"
    EXHAUSTED = "EXHAUSTED"
    RECOVERED = "RECOVERED"
    WEBHOOK_ENDPOINT_DISABLED = "WEBHOOK_ENDPOINT_DISABLED"


async def index_alerts_again(apps, schema_editor) -> None:
    await schema_editor.client.execute_script(
        'CREATE INDEX IF NOT EXISTS "idx_alert_applica_1f6639" ON "alert" ("application_id", "id")'
    )


class Migration(migrations.Migration):
    dependencies = [("models", "0016_end_user_order_index")]

    initial = False

    operations = [
        ops.AlterField(model_name="Alert", name="pool_id", field=fields.BigIntField(null=True)),
        ops.AlterField(model_name="Alert", name="remaining", field=fields.BigIntField(null=True)),
        ops.AlterField(
            model_name="Alert",
            name="kind",
            field=fields.CharEnumField(
                description="LOW: LOW\nEXHAUSTED: EXHAUSTED\nRECOVERED: RECOVERED\n"
                "WEBHOOK_ENDPOINT_DISABLED: WEBHOOK_ENDPOINT_DISABLED",
                enum_type=AlertKind,
                max_length=32,
            ),
        ),
        ops.AddField(
            model_name="Alert", name="webhook_endpoint_id", field=fields.BigIntField(null=True)
        ),
        ops.RunPython(index_alerts_again),
        ops.AddField(
            model_name="CreditPack",
            name="expiry_warned_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
