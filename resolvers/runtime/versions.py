"""Whether the fast paths that rely on library internals may run in this process.

They were verified against exactly the versions of `VERIFIED` (the ones requirements.lock
pins). With any other installed version, or with `USAGEGRAPH_FAST_PATHS=0`, every fast path
steps aside and the stock Strawberry / graphql-core path answers: slower, never wrong."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version

logger = logging.getLogger("usagegraph.runtime")

# The versions the fenced modules were verified against; keep equal to requirements.lock's
# pins (tests/test_locked_versions.py checks it).
VERIFIED: dict[str, str] = {"strawberry-graphql": "0.341.2", "graphql-core": "3.3.2"}

ENV = "USAGEGRAPH_FAST_PATHS"


@dataclass(frozen=True)
class FastPaths:
    enabled: bool
    reason: str  # why they are off ("" when on)


def installed_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in VERIFIED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def decide(
    environ: dict[str, str] | os._Environ[str], installed: dict[str, str | None]
) -> FastPaths:
    """The decision for these settings and installed versions (pure, for tests)."""
    if environ.get(ENV, "1").strip().lower() in {"0", "false", "no", "off"}:
        return FastPaths(False, f"{ENV}=0")
    differing = {
        name: (found, VERIFIED[name])
        for name, found in installed.items()
        if found != VERIFIED[name]
    }
    if differing:
        listed = ", ".join(
            f"{name} {found or 'missing'} (verified: {wanted})"
            for name, (found, wanted) in sorted(differing.items())
        )
        return FastPaths(False, f"installed versions differ from the verified ones: {listed}")
    return FastPaths(True, "")


@cache
def fast_paths() -> FastPaths:
    """This process's decision, logged once when the fast paths are off."""
    decision = decide(os.environ, installed_versions())
    if not decision.enabled:
        logger.warning("fast paths off, the stock library paths answer: %s", decision.reason)
    return decision


def fast_paths_enabled() -> bool:
    return fast_paths().enabled
