"""The layers import one way: `models/` nothing of the others, `resolvers/` nothing of `api/`,
and the REST routes nothing of `resolvers/` (both check callers through `models.access`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_roots(folder: Path) -> list[tuple[str, str]]:
    """(file:line, top-level package) of every import below a folder, nested ones too."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            found += [(where, module.split(".")[0]) for module in modules]
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("models", {"api", "resolvers", "subscriptions"}),
        ("resolvers", {"api"}),
        ("api/routes", {"resolvers"}),
    ],
)
def test_a_layer_imports_none_of_the_layers_above_it(folder: str, forbidden: set[str]) -> None:
    wrong = [(where, root) for where, root in imported_roots(ROOT / folder) if root in forbidden]
    assert not wrong, wrong
