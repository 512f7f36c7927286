"""The fence around library internals (resolvers/runtime/): its fast paths run only on the
verified Strawberry and graphql-core versions and unless USAGEGRAPH_FAST_PATHS=0, the stock
paths answer the same otherwise, and no module outside the fence reaches into the
libraries' private names."""

from __future__ import annotations

import ast
from pathlib import Path

import graphql
import pytest
import strawberry
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from bench.dashboard_query import DASHBOARD
from models.access import Principal
from models.tenancy import ApiKeyRole
from resolvers.context import Context
from resolvers.runtime import versions
from resolvers.runtime.plain_lists import PlainListExecutor
from resolvers.runtime.versions import VERIFIED, decide
from resolvers.schema import build_schema, schema
from tests.conftest import Backend
from tests.ledger_helpers import application_with_allocations
from tests.locked_versions import locked_pins

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "models", "resolvers", "subscriptions")
FENCES = (ROOT / "resolvers" / "runtime", ROOT / "api" / "transport")
# Modules outside the fences allowed to reach Strawberry's internals, each with its reason
# (none: the WebSocket transport is fenced in api/transport/).
OUTSIDE_THE_FENCES: set[str] = set()


def test_the_fast_paths_run_on_the_verified_versions_only() -> None:
    assert decide({}, dict(VERIFIED)).enabled
    off = decide({"USAGEGRAPH_FAST_PATHS": "0"}, dict(VERIFIED))
    assert not off.enabled and "USAGEGRAPH_FAST_PATHS=0" in off.reason
    newer = decide({}, {**VERIFIED, "strawberry-graphql": "0.400.0"})
    assert not newer.enabled and "strawberry-graphql 0.400.0" in newer.reason
    missing = decide({}, {**VERIFIED, "graphql-core": None})
    assert not missing.enabled and "graphql-core missing" in missing.reason
    assert decide({"USAGEGRAPH_FAST_PATHS": "1"}, dict(VERIFIED)).enabled


def test_the_verified_versions_are_the_locked_ones() -> None:
    pins = locked_pins()
    assert {name: pins[name] for name in VERIFIED} == VERIFIED


def test_this_process_runs_the_fast_paths_only_when_it_may() -> None:
    """With the locked versions installed the fast paths are on unless switched off; a
    schema built while they are on uses them, one built while off the stock executor."""
    decision = versions.fast_paths()
    uses_fast = schema.execution_context_class is PlainListExecutor
    assert uses_fast == decision.enabled
    if decision.enabled:
        assert versions.installed_versions() == VERIFIED


def test_other_library_versions_fall_back_to_the_stock_paths(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        versions, "installed_versions", lambda: {**VERIFIED, "graphql-core": "3.4.0"}
    )
    monkeypatch.delenv("USAGEGRAPH_FAST_PATHS", raising=False)
    versions.fast_paths.cache_clear()
    try:
        stock = build_schema()
        assert not versions.fast_paths_enabled()
        assert "graphql-core 3.4.0 (verified: 3.3.2)" in caplog.text
    finally:
        versions.fast_paths.cache_clear()
    assert stock.execution_context_class is StrawberryGraphQLCoreExecutionContext


async def test_the_stock_paths_answer_what_the_fast_paths_answer(backend: Backend) -> None:
    from datetime import UTC, datetime, timedelta

    app, _ = await application_with_allocations(4)
    now = datetime.now(UTC)
    variables = {
        "id": str(app),
        "from": (now - timedelta(days=3)).isoformat(),
        "to": now.isoformat(),
    }
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    answers = []
    for fast in (True, False):
        result = await build_schema(fast).execute(
            DASHBOARD, variable_values=variables, context_value=Context(None, None, principal)
        )
        assert result.errors is None, result.errors
        answers.append(result.data)
    # burn rates are computed at each request's own moment: compare everything else
    for answer in answers:
        for edge in answer["application"]["endUsers"]["edges"]:
            for balance in edge["node"]["balances"]:
                balance.pop("projectedExhaustionAt")
        answer["application"].pop("allocationSummary")
    assert answers[0] == answers[1]


def _private_library_names() -> set[str]:
    """Every name Strawberry and graphql-core define with a leading underscore."""
    names: set[str] = set()
    for package in (strawberry, graphql):
        for path in Path(package.__file__).parent.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    name = node.name
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    name = node.attr
                else:
                    continue
                if name.startswith("_") and not name.startswith("__"):
                    names.add(name)
    return names


def test_no_module_outside_the_fences_uses_a_private_library_name() -> None:
    private = _private_library_names()
    assert {"_schema", "_provided_operation_name", "_get_basic_result"} <= private
    found: list[str] = []
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if "migrations" in path.parts or relative in OUTSIDE_THE_FENCES:
                continue
            if any(fence in path.parents for fence in FENCES):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                    "strawberry",
                    "graphql",
                ):
                    found += [
                        f"{relative}:{node.lineno} imports {alias.name}"
                        for alias in node.names
                        if alias.name.startswith("_")
                    ]
                elif (
                    isinstance(node, ast.Attribute)
                    and node.attr in private
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                ):
                    found.append(f"{relative}:{node.lineno} reads .{node.attr}")
    assert not found, found


def test_the_transport_says_which_versions_it_was_verified_against() -> None:
    """Every module of api/transport/ names the verified versions in its docstring: moving
    `VERIFIED` on means reading them again."""
    wanted = [f"{name} {version}" for name, version in VERIFIED.items()]
    for path in (ROOT / "api" / "transport").rglob("*.py"):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        flat = " ".join(docstring.split())
        missing = [text for text in wanted if text not in flat]
        assert not missing, f"{path.relative_to(ROOT)} does not name {missing}"
