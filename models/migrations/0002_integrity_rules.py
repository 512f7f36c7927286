"""CHECK constraints and the append-only ledger, which CreateModel does not emit.

The CHECKs are read from each model's Meta.constraints (one source). PostgreSQL gets real
constraints; SQLite cannot add a CHECK to an existing table, so it gets triggers that
re-check the written row and abort the statement, which is the same guarantee."""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.migrations.constraints import CheckConstraint

LEDGER_TABLE = "ledger_entry"


def _model_checks() -> list[tuple[str, CheckConstraint]]:
    from models import credits

    found = []
    for model in (credits.CreditPool, credits.CreditPack, credits.EndUserBalance,
                  credits.Allocation):
        for constraint in model._meta.constraints:
            if isinstance(constraint, CheckConstraint):
                found.append((model._meta.db_table, constraint))
    return found


def _unconstrained_foreign_keys() -> list[tuple[str, str]]:
    """(table, column) of foreign keys declared with db_constraint=False, which CreateModel
    still creates on PostgreSQL."""
    from models import records

    found = []
    for model in (records.LedgerEntry, records.UsageEvent, records.OutboxEvent):
        for field in model._meta.fk_fields:
            fk = model._meta.fields_map[field]
            if not fk.db_constraint:
                found.append((model._meta.db_table, fk.source_field or f"{field}_id"))
    return found


async def add_integrity_rules(apps, schema_editor) -> None:
    client = schema_editor.client
    statements: list[str] = []
    if client.capabilities.dialect == "postgres":
        for table, column in _unconstrained_foreign_keys():
            statements.append(f'ALTER TABLE "{table}" DROP CONSTRAINT IF EXISTS "{table}_{column}_fkey"')
        for table, c in _model_checks():
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
        for table, c in _model_checks():
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
