"""The generating side of tests/api/test_fuzz_graphql.py, run as its own process: hypothesis is
CPU-bound, and in the test's process it would share one interpreter lock with the server it
fuzzes. Reads its configuration as JSON on stdin, sends every generated operation to the
server over HTTP with one httpx client, and prints a JSON summary as its last line; exits 1
with hypothesis's (shrunk) failing example on stderr when an answer breaks a rule."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes

ANSWER_TIMEOUT = 10.0  # seconds; a request the server never answers is a failure too
# What an answer must never show (unless the request itself carried it).
LEAKS = (
    "Traceback",
    'File "',
    "site-packages",
    "/work/",
    '.py"',
    ".py,",
    "SELECT ",
    "INSERT INTO",
    "UPDATE ",
    "asyncpg",
    "sqlite3",
    "tortoise",
    "Exception",
)


@dataclass
class Config:
    url: str
    key: str
    key_row_id: int  # never generated: revoking the fuzzing key would end the run
    ids: list[str]
    strings: list[str]
    sdl: str
    examples: int


def strategy(config: Config) -> st.SearchStrategy[str]:
    """Queries and mutations of the schema; IDs and strings partly the application's own,
    so that generated writes reach the ledger rather than stopping at NOT_FOUND."""
    own_key = str(config.key_row_id)
    ids = _mostly(
        st.sampled_from([i for i in config.ids if i != own_key]),
        st.one_of(
            st.integers(min_value=-(2**70), max_value=2**70).map(str).filter(own_key.__ne__),
            st.text(max_size=30),
        ),
    )
    strings = _mostly(st.sampled_from(config.strings), st.text(max_size=60))
    instants = _mostly(
        st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
        st.one_of(
            st.datetimes().map(datetime.isoformat),  # naive
            st.sampled_from(["", "now", "2026-13-45T99:00:00Z", "0001-01-01T00:00:00+00:00"]),
            st.text(max_size=30),
        ),
    )
    scalars = {
        "ID": ids.map(nodes.String),
        "String": strings.map(nodes.String),
        "DateTime": instants.map(nodes.String),
    }
    # Mostly valid operations; one in four breaks the schema once (a wrong type, a missing
    # argument...) and must be refused as cleanly.
    return _mostly(
        from_schema(config.sdl, custom_scalars=scalars),
        from_schema(config.sdl, custom_scalars=scalars, mode=Mode.NEGATIVE),
    )


def _mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` three times in four, `rare` otherwise."""
    return st.integers(0, 3).flatmap(lambda n: rare if n == 0 else usual)


def problems_of(query: str, status: int, text: str, body: Any) -> list[str]:
    problems = []
    if status >= 500:
        problems.append(f"HTTP {status}")
    if status == 401:  # the key is never revoked by the run: something else refused it
        problems.append("the fuzzing key was refused")
    for leak in LEAKS:
        if leak in text and leak not in query:
            problems.append(f"shows {leak!r}")
    if not isinstance(body, dict):
        return [*problems, "the answer is not a JSON object"]
    for error in body.get("errors") or []:
        if (error.get("extensions") or {}).get("code") == "INTERNAL":
            problems.append(f"a resolver crashed (masked as INTERNAL) at {error.get('path')}")
    return problems


def outcome(body: Any) -> str:
    """A short label for the summary: data, the error codes, or a validation failure."""
    if not isinstance(body, dict):
        return "not JSON"
    codes = sorted(
        {
            (e.get("extensions") or {}).get("code") or "GRAPHQL_VALIDATION"
            for e in body.get("errors") or []
        }
    )
    payload = json.dumps(body.get("data") or {})
    payload_codes = sorted(
        code
        for code in (
            "NOT_FOUND",
            "VALIDATION",
            "INSUFFICIENT_CREDITS",
            "IDEMPOTENCY_CONFLICT",
            "FORBIDDEN",
            "EXPIRED",
        )
        if f'"{code}"' in payload
    )
    return ",".join(codes + [f"payload:{c}" for c in payload_codes]) or "ok"


def _report(problems: list[str], query: str, answer: str) -> None:
    """Every failing operation as it happens (hypothesis then shrinks the first one)."""
    print(f"FAILED {problems}\n{query}\n{answer[:20000]}\n", file=sys.stderr, flush=True)


def run(config: Config) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    recent: deque[str] = deque(maxlen=8)
    headers = {"Authorization": f"Bearer {config.key}"}
    with httpx.Client(timeout=ANSWER_TIMEOUT, headers=headers) as client:

        @settings(
            max_examples=config.examples,
            # The suite's run is the same every time (CI must not turn red by chance);
            # USAGEGRAPH_FUZZ_RANDOM=1 explores new operations on each run.
            derandomize=os.environ.get("USAGEGRAPH_FUZZ_RANDOM") != "1",
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(query=strategy(config))
        def fuzz(query: str) -> None:
            try:
                response = client.post(config.url, json={"query": query})
            except httpx.TimeoutException:
                # Often an earlier operation wedged the server: show what came before.
                before = "\n".join(f"-- {i}:\n{q}" for i, q in enumerate(recent, 1))
                _report(["no answer within the timeout"], query, f"after:\n{before}")
                raise
            recent.append(query)
            try:
                body = response.json()
            except ValueError:
                body = None
            statuses[response.status_code] += 1
            outcomes[outcome(body)] += 1
            problems = problems_of(query, response.status_code, response.text, body)
            if problems:
                _report(problems, query, response.text)
            assert not problems, f"{problems}\n{query}\n{response.text[:2000]}"

        fuzz()
    return {
        "sent": sum(statuses.values()),
        "statuses": dict(statuses),
        "outcomes": dict(outcomes.most_common(15)),
    }


def main() -> None:
    config = Config(**json.loads(sys.stdin.read()))
    summary = run(config)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
