"""CHECK constraints and the append-only ledger, which CreateModel does not emit.

The CHECKs are those of the models' Meta.constraints, frozen below. PostgreSQL gets real
constraints; SQLite cannot add a CHECK to an existing table, so it gets triggers that
re-check the written row and abort the statement, which is the same guarantee."""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.migrations.constraints import CheckConstraint

LEDGER_TABLE = "ledger_entry"


# Frozen here as they stood when this migration was written: a migration must build the same
# schema whatever the models say later (a later change is a later migration).
CHECKS: tuple[tuple[str, CheckConstraint], ...] = tuple(
    (table, CheckConstraint(check=check, name=name))
    for table, name, check in (
        ("credit_pool", "credit_pool_counters_non_negative",
         "purchased >= 0 AND allocated >= 0 AND used >= 0 AND expired >= 0"
         " AND end_user_remaining >= 0"),
        ("credit_pool", "credit_pool_totals_fit_int",
         "purchased <= 2147483647 AND allocated <= 2147483647"),
        ("credit_pool", "credit_pool_unallocated_non_negative",
         "purchased - used - expired - end_user_remaining >= 0"),
        ("credit_pack", "credit_pack_counters_valid",
         "credits > 0 AND unallocated >= 0 AND used >= 0 AND expired >= 0"
         " AND unallocated + used + expired <= credits"),
        ("end_user_balance", "end_user_balance_counters_valid",
         "allocated >= 0 AND used >= 0 AND expired >= 0 AND remaining >= 0"
         " AND remaining = allocated - used - expired"),
        ("end_user_balance", "end_user_balance_total_fits_int", "allocated <= 2147483647"),
        ("allocation", "allocation_counters_valid",
         "allocated >= 0 AND used >= 0 AND expired >= 0 AND remaining >= 0"
         " AND remaining = allocated - used - expired"),
    )
)

# (table, column) of foreign keys declared with db_constraint=False, which CreateModel still
# creates on PostgreSQL.
UNCONSTRAINED_FOREIGN_KEYS = (
    ("ledger_entry", "application_id"),
    ("ledger_entry", "end_user_id"),
    ("ledger_entry", "pool_id"),
    ("ledger_entry", "lot_id"),
    ("usage_event", "application_id"),
    ("usage_event", "end_user_id"),
    ("usage_event", "pool_id"),
    ("outbox_event", "application_id"),
)


async def add_integrity_rules(apps, schema_editor) -> None:
    client = schema_editor.client
    statements: list[str] = []
    if client.capabilities.dialect == "postgres":
        for table, column in UNCONSTRAINED_FOREIGN_KEYS:
            statements.append(f'ALTER TABLE "{table}" DROP CONSTRAINT IF EXISTS "{table}_{column}_fkey"')
        for table, c in CHECKS:
            statements.append(
                f'ALTER TABLE "{table}" ADD CONSTRAINT "{c.name}" CHECK ({c.check})'
            )
        statements.append(
            "CREATE OR REPLACE FUNCTION ledger_entry_append_only() RETURNS trigger"
            " LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'ledger entries are append-only' USING ERRCODE = '23514';"
            " END $$"
        )
        statements.append(
            f'CREATE TRIGGER ledger_entry_append_only BEFORE UPDATE OR DELETE ON "{LEDGER_TABLE}"'
            " FOR EACH ROW EXECUTE FUNCTION ledger_entry_append_only()"
        )
    else:
        for table, c in CHECKS:
            for event in ("INSERT", "UPDATE"):
                statements.append(
                    f'CREATE TRIGGER "{c.name}_{event.lower()}" AFTER {event} ON "{table}"'
                    f' FOR EACH ROW WHEN NOT (SELECT {c.check} FROM "{table}"'
                    " WHERE id = NEW.id)"
                    f" BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: {c.name}'); END"
                )
        for event in ("UPDATE", "DELETE"):
            statements.append(
                f'CREATE TRIGGER "ledger_entry_no_{event.lower()}" BEFORE {event}'
                f' ON "{LEDGER_TABLE}"'
                " BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END"
            )
    for statement in statements:
        await client.execute_script(statement)


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    initial = False

    operations = [ops.RunPython(add_integrity_rules)]
