"""Counts the SQL statements sent to the database driver (asyncpg or aiosqlite) by the code
running under `counting()`: tasks started inside it inherit the marker (DataLoader batches
included), the server's background work does not. What is counted is what reaches the
driver's wire methods, pool housekeeping (asyncpg's reset on release) included."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiosqlite
import asyncpg
import pytest

import models.sql

_recording: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "statement_recording", default=None
)


def _wrap(original: Callable[..., Any], statement_of: Callable[..., str | None]) -> Any:
    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen = _recording.get()
        if seen is not None:
            text = statement_of(*args, **kwargs)
            if text is not None:
                seen.append(text)
        return await original(self, *args, **kwargs)

    return wrapper


def _first(query: str = "", *_: Any, **__: Any) -> str:
    return query


def _simple_only(query: str = "", *args: Any, **__: Any) -> str | None:
    # asyncpg's execute() with arguments goes through _execute, counted there
    return None if args else query


_PATCHES: list[tuple[type, str, Callable[..., str | None]]] = [
    (asyncpg.connection.Connection, "execute", _simple_only),
    (asyncpg.connection.Connection, "_execute", _first),
    (asyncpg.connection.Connection, "_executemany", _first),
    (aiosqlite.Connection, "execute", _first),
    (aiosqlite.Connection, "execute_fetchall", _first),
    (aiosqlite.Connection, "execute_insert", _first),
    (aiosqlite.Connection, "executemany", _first),
    (aiosqlite.Connection, "executescript", _first),
    (aiosqlite.Connection, "commit", lambda *a, **k: "COMMIT"),
    (aiosqlite.Connection, "rollback", lambda *a, **k: "ROLLBACK"),
]


@contextmanager
def counting() -> Iterator[list[str]]:
    """The statements sent inside the block (and by tasks it starts), in order."""
    originals = [(cls, name, getattr(cls, name)) for cls, name, _ in _PATCHES]
    for (cls, name, statement_of), (_, _, original) in zip(_PATCHES, originals, strict=True):
        setattr(cls, name, _wrap(original, statement_of))
    seen: list[str] = []
    token = _recording.set(seen)
    try:
        yield seen
    finally:
        _recording.reset(token)
        for cls, name, original in originals:
            setattr(cls, name, original)


def planned_once(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements read with generic plans (`models.sql._fetch_planned_once`) from now on,
    in order, for the rest of the test."""
    planned: list[str] = []
    fetch = models.sql._fetch_planned_once

    async def noting(client: object, statement: str, args: tuple[object, ...]) -> object:
        planned.append(statement)
        return await fetch(client, statement, args)

    monkeypatch.setattr(models.sql, "_fetch_planned_once", noting)
    return planned
