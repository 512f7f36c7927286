"""The repository speaks of the product only: no reference to a specification kept
elsewhere (the design lives in docs/), no issue numbers, nothing about who made it or when."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Files not written here: vendored assets, the lock, pictures.
SKIPPED = re.compile(r"^api/static/vendor/|\.lock$|\.png$|package-lock\.json$")
FORBIDDEN = {
    "a reference to a specification kept elsewhere": re.compile(r"\bSPEC\b"),
    "an issue number": re.compile(r"\bissues? #?\d+|\bticket #?\d+", re.IGNORECASE),
    "a word about the makers": re.compile(
        r"\b(founding engineers?|next engineers?|(previous|this|last|next) session"
        r"|helper agents?|other engineers)\b",
        re.IGNORECASE,
    ),
}


def findings(text: str) -> list[str]:
    return [what for what, pattern in FORBIDDEN.items() if pattern.search(text)]


def test_the_matchers_find_what_they_look_for() -> None:
    assert findings("the status rule of SPEC §4") == [
        "a reference to a specification kept elsewhere"
    ]
    assert findings("measured in issue 13") == ["an issue number"]
    assert findings("fixed in Issue #7") == ["an issue number"]
    assert findings("left for the next session") == ["a word about the makers"]
    assert findings("INTROSPECTION_COSTS, a session-scoped fixture, an issue of the API") == []


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
