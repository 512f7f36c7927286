"""An application's End Users in id order (the default End User page) through one index,
whatever the application's size among the others: the page's plan is then the same for
every application, so it is planned once (models/sql.py `planned_once`)."""

from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0015_webhooks")]

    initial = False

    operations = [
        ops.RunSQL(["CREATE INDEX end_user_by_application ON end_user (application_id, id)"]),
    ]
