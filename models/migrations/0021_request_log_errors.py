"""An index of the request log's error entries (status 400 and up) per application in page
order: a page filtered to 4xx or 5xx reads only those instead of every entry of the
application until enough match (5xx are rare: the whole log, for the page integrators debug
their failing calls from). Only error entries are written to it."""

from tortoise import migrations
from tortoise.migrations import operations as ops


async def index_errors(apps, schema_editor) -> None:
    await schema_editor.client.execute_script(
        'CREATE INDEX request_log_errors ON request_log (application_id, "time", id)'
        " WHERE status >= 400"
    )


class Migration(migrations.Migration):
    dependencies = [("models", "0020_billing_rollups")]

    initial = False

    operations = [ops.RunPython(index_errors)]
