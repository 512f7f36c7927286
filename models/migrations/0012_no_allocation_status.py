"""End User balances that hold no allocation (net of releases) have the status
NO_ALLOCATION, in the live balances and in the folded balance report alike."""

from tortoise import migrations
from tortoise.migrations import operations as ops


async def mark_no_allocation(apps, schema_editor) -> None:
    client = schema_editor.client
    for table in ("end_user_balance", "balance_report"):
        await client.execute_script(
            f"UPDATE {table} SET status = 'NO_ALLOCATION' WHERE allocated = 0"
        )


class Migration(migrations.Migration):
    dependencies = [("models", "0011_api_key_last_used")]

    initial = False

    operations = [ops.RunPython(mark_no_allocation)]
