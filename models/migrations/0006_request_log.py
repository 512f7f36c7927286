"""Placeholder for the request log (issue 6): filled in by the work that needs it."""

from tortoise import migrations


class Migration(migrations.Migration):
    dependencies = [("models", "0005_hot_updates")]

    initial = False

    operations: list = []
