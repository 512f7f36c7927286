"""A pool's End User page ordered by used, remaining or projected exhaustion (ties by id, in
the order's direction) through the balance report's indexes: the first End Users of the
order unchanged since the fold come from one index range, whatever the number of End Users
(models/allocation_report.py `_report_candidates`). The projection's expression is the
page's own sort key on the report's columns; same syntax on PostgreSQL and SQLite."""

from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0017_webhook_alerts_and_expiry_warnings")]

    initial = False

    operations = [
        ops.RunSQL(
            [
                "CREATE INDEX balance_report_page_by_used ON balance_report"
                " (pool_id, used, end_user_id)",
                "CREATE INDEX balance_report_page_by_remaining ON balance_report"
                " (pool_id, remaining, end_user_id)",
                "CREATE INDEX balance_report_page_by_projection ON balance_report (pool_id,"
                " (CASE WHEN window_used > 0"
                " THEN CAST(remaining AS DOUBLE PRECISION) / window_used"
                " ELSE CAST(1e18 AS DOUBLE PRECISION) END), end_user_id)",
            ]
        ),
    ]
