"""When each API key was last used (`api_key.last_used_at`, null until its first use)."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0010_end_user_count")]

    initial = False

    operations = [
        ops.AddField(
            model_name="ApiKey",
            name="last_used_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
