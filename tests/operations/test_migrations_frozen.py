"""Migrations build the same schema whatever the current code says: none imports the live
models, enums or helpers (each keeps the values it was written with)."""

from __future__ import annotations

import ast
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parents[2] / "models" / "migrations"
ALLOWED_ROOTS = {"tortoise", "enum", "json", "functools", "__future__", "datetime"}


def test_migrations_import_nothing_of_the_live_code() -> None:
    found = []
    paths = sorted(MIGRATIONS.glob("0*.py"))
    assert len(paths) > 10
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            found += [
                f"{path.name}:{node.lineno} {module}"
                for module in modules
                if module.split(".")[0] not in ALLOWED_ROOTS
            ]
    assert not found, found
