"""The repository speaks of the product only: no reference to a specification kept
elsewhere (the design lives in docs/), no issue numbers, nothing about who made it or when."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Files not written here: vendored assets, the locks, pictures.
SKIPPED = re.compile(r"(^|/)vendor/|\.lock$|\.png$|package-lock\.json$")
FORBIDDEN = {
    "a reference to a specification kept elsewhere": re.compile(r"\bSPEC\b|SPEC\.md|SPEC §"),
    "an issue number": re.compile(
        # "issue 12", "ticket #7", or "#12" standing alone in prose ("see #12", "(#12)")
        r"\b(issues?|tickets?|PR) #?\d+|(?:^|[\s(\[,;])#\d+\b(?![\w-])",
        re.IGNORECASE,
    ),
    "a word about the makers": re.compile(
        r"\b(founding engineers?|next engineers?|(previous|this|last|next|earlier) sessions?"
        r"|helpers? (agents?|sessions?)|(another|other) helpers?\b(?! (function|module))"
        r"|other engineers|whoever (comes|picks) next|handed over to)\b",
        re.IGNORECASE,
    ),
}


def findings(text: str) -> list[str]:
    return [what for what, pattern in FORBIDDEN.items() if pattern.search(text)]


SPECIFICATION = "a reference to a specification kept elsewhere"
ISSUE = "an issue number"
MAKERS = "a word about the makers"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("the status rule of SPEC §4", [SPECIFICATION]),
        ("as /work/shared/SPEC.md says", [SPECIFICATION]),
        ("(see SPEC)", [SPECIFICATION]),
        ("measured in issue 13", [ISSUE]),
        ("fixed in Issue #7", [ISSUE]),
        ("a workaround (#42) for the pool", [ISSUE]),
        ("see #12.", [ISSUE]),
        ("# 12 End Users", []),
        ("color: #fff; the #key=... fragment; #main-content", []),
        ("left for the next session", [MAKERS]),
        ("written by a previous session", [MAKERS]),
        ("the founding engineers chose", [MAKERS]),
        ("another helper moved it", [MAKERS]),
        ("INTROSPECTION_COSTS, a session-scoped fixture, an issue of the API", []),
        ("the tab's session; graphql-core's async helpers; a helper function", []),
    ],
)
def test_the_matchers_find_what_they_look_for(text: str, found: list[str]) -> None:
    assert findings(text) == found


def test_no_tracked_file_speaks_of_how_it_was_made() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    this = Path(__file__).relative_to(ROOT).as_posix()
    found = []
    for name in tracked:
        if SKIPPED.search(name) or name == this:
            continue
        try:
            text = (ROOT / name).read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            found += [f"{name}:{number}: {what}: {line.strip()[:80]}" for what in findings(line)]
    assert not found, "\n".join(found)
