"""The tests are grouped by area (tests/<area>/test_*.py) and share what they share through
helper modules and fixtures (tests/*.py, conftest.py), never by importing another test
module: a test module's names are its own."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def test_no_test_module_imports_another() -> None:
    wrong = [
        (str(path.relative_to(TESTS)), module)
        for path in TESTS.rglob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[-1].startswith("test_")
    ]
    assert not wrong, wrong


def test_every_test_module_sits_in_an_area() -> None:
    stray = sorted(path.name for path in TESTS.glob("test_*.py"))
    assert not stray, f"test modules outside an area folder: {stray}"
    areas = {path.parent.name for path in TESTS.rglob("test_*.py")}
    assert areas <= {
        "ledger",
        "api",
        "realtime",
        "reporting",
        "request_log",
        "operations",
        "webhooks",
    }, areas
    for area in areas:
        assert (TESTS / area / "__init__.py").exists(), area


def test_the_check_sees_a_cross_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from tests.api.test_limits import something\nimport tests.test_x\n")
    assert _imported_modules(sample) == [
        "tests.api.test_limits",
        "tests.api.test_limits.something",
        "tests.test_x",
    ]
