"""Placeholder for billing periods (issue 5): filled in by the work that needs it."""

from tortoise import migrations


class Migration(migrations.Migration):
    dependencies = [("models", "0006_request_log")]

    initial = False

    operations: list = []
