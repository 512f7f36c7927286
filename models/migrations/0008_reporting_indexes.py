"""Placeholder for reporting indexes (issue 5): filled in by the work that needs it."""

from tortoise import migrations


class Migration(migrations.Migration):
    dependencies = [("models", "0007_billing_periods")]

    initial = False

    operations: list = []
