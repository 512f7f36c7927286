"""The relay deletes an outbox row once it is published instead of stamping it: an UPDATE
wrote a new row version and two index entries per event, a DELETE writes neither, and the
hourly purge of stamped rows goes away. A row present is a row not yet published."""

from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0008_reporting_indexes")]

    initial = False

    operations = [
        ops.RemoveIndex(model_name="OutboxEvent", name=None, fields=["published_at", "id"]),
        ops.RemoveField(model_name="OutboxEvent", name="published_at"),
    ]
