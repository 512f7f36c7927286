"""The environment is the locked one: every package of requirements.lock is installed at its
pinned version. Strawberry and graphql-core above all: code of this project relies on the
internals of the versions it was verified against."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from tests.locked_versions import locked_pins


def test_lock_pins_strawberry_and_graphql_core() -> None:
    pins = locked_pins()
    assert "strawberry-graphql" in pins and "graphql-core" in pins


def test_installed_packages_are_the_locked_versions() -> None:
    wrong = {}
    for name, pinned in locked_pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (installed, pinned)
    assert not wrong, f"installed (found, locked): {wrong}; install from requirements.lock"
