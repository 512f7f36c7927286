"""Webhooks: an application's endpoints, and one message per event and endpoint with where
its delivery stands."""

from enum import StrEnum

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


# The values as they stood when this migration was written.
class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class Migration(migrations.Migration):
    dependencies = [("models", "0014_booked_rollups")]

    initial = False

    operations = [
        ops.CreateModel(
            name="WebhookEndpoint",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("application", fields.ForeignKeyField("models.Application", source_field="application_id", db_constraint=True, to_field="id", related_name="webhook_endpoints", on_delete=OnDelete.RESTRICT)),
                ("url", fields.CharField(max_length=2048)),
                ("description", fields.CharField(max_length=500, default="")),
                ("events", fields.CharField(max_length=500)),
                ("enabled", fields.BooleanField(default=True)),
                ("disabled_reason", fields.CharField(max_length=500, null=True)),
                ("secret", fields.CharField(max_length=100)),
                ("previous_secret", fields.CharField(max_length=100, null=True)),
                ("previous_secret_until", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("failing_since", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("updated_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={"table": "webhook_endpoint", "app": "models", "indexes": [Index(fields=["application_id", "enabled"])], "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="WebhookMessage",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("endpoint", fields.ForeignKeyField("models.WebhookEndpoint", source_field="endpoint_id", db_constraint=True, to_field="id", related_name="messages", on_delete=OnDelete.CASCADE)),
                ("application_id", fields.BigIntField()),
                ("event_type", fields.CharField(max_length=40)),
                ("payload", fields.TextField()),
                ("status", fields.CharEnumField(description="PENDING: PENDING\nDELIVERED: DELIVERED\nFAILED: FAILED", enum_type=DeliveryStatus, max_length=16)),
                ("attempts", fields.IntField(default=0)),
                ("next_attempt_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("lease_until", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("response_status", fields.IntField(null=True)),
                ("latency_ms", fields.FloatField(null=True)),
                ("last_error", fields.CharField(max_length=500, null=True)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("delivered_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={"table": "webhook_message", "app": "models", "indexes": [Index(fields=["endpoint_id", "status", "id"]), Index(fields=["endpoint_id", "id"])], "pk_attr": "id"},
            bases=["Model"],
        ),
    ]
