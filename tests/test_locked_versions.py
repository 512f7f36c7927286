"""The environment is the locked one: every package of requirements.lock is installed at its
pinned version. Strawberry and graphql-core above all: code of this project relies on the
internals of the versions it was verified against."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if not line or line[0] in " #-":
            continue  # hashes, comments and options
        requirement = Requirement(line.rstrip(" \\"))
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_lock_pins_strawberry_and_graphql_core() -> None:
    pins = _pins()
    assert "strawberry-graphql" in pins and "graphql-core" in pins


def test_installed_packages_are_the_locked_versions() -> None:
    wrong = {}
    for name, pinned in _pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (installed, pinned)
    assert not wrong, f"installed (found, locked): {wrong}; install from requirements.lock"
