"""The sessions of the reads planned once (models.sql `_fetch_planned_once`): a few asyncpg
connections this process keeps, each lent for one statement at a time.

asyncpg's pool does more per loan than such a read needs: a proxy object, a task that
shields the release, a reset and a timer for idle connections. On the reference machine that
cost the server about 25 µs of CPU per statement, as much as running the statement itself.
A read here keeps no state after its statement: no transaction, no session setting, no
LISTEN. So a connection goes back as it came. A connection that fails is closed, and the next
loan opens another in its place. That covers a restarted server, a terminated backend and a
read cancelled midway.

api/database.py opens these sessions on PostgreSQL with the fast paths on. Otherwise the
reads take Tortoise's pool of the same sessions, the stock path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class ReadSessions:
    """At most `size` connections opened by `connect`, lent for one read each."""

    def __init__(self, connect: Connect, size: int) -> None:
        self._connect = connect
        self._size = size
        self._loop: asyncio.AbstractEventLoop | None = None
        # a free place each: an open connection, or None where one is to be opened
        self._places: asyncio.Queue[asyncpg.Connection | None] = asyncio.Queue()
        self._retiring: set[asyncio.Task[None]] = set()

    async def fetch(self, statement: str, args: Sequence[Any]) -> list[asyncpg.Record]:
        places = self._current()
        connection = places.get_nowait() if places.qsize() else await places.get()
        try:
            if connection is None or connection.is_closed():
                connection = await self._connect()
            rows = await connection.fetch(statement, *args)
        except asyncpg.PostgresError:
            # the server refused the statement; the session is as it was unless it ended
            self._give_back(places, connection)
            raise
        except asyncio.CancelledError:
            # asyncpg has asked the server to cancel the statement; the session is closed once
            # that is done (in the background), and its place is free now
            self._retire(connection)
            places.put_nowait(None)
            raise
        except BaseException:
            _close(connection)
            places.put_nowait(None)
            raise
        self._give_back(places, connection)
        return rows

    def _current(self) -> asyncio.Queue[asyncpg.Connection | None]:
        """The free places of the running event loop: connections belong to the loop that
        opened them, so another loop (a test's, say) starts with places of its own."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._forget()
            self._loop = loop
            self._places = asyncio.Queue()
            for _ in range(self._size):
                self._places.put_nowait(None)
        return self._places

    def _give_back(
        self, places: asyncio.Queue[asyncpg.Connection | None], connection: asyncpg.Connection
    ) -> None:
        """Returns the connection to its place; closes it when it ended, or when its places
        are gone (another loop's, or closed), which then get nothing back."""
        if places is not self._places:
            _close(connection)
        elif connection.is_closed():
            places.put_nowait(None)
        else:
            places.put_nowait(connection)

    def _retire(self, connection: asyncpg.Connection | None) -> None:
        if connection is None or connection.is_closed():
            return
        task = asyncio.get_running_loop().create_task(_close_gracefully(connection))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _forget(self) -> None:
        while self._places.qsize():
            _close(self._places.get_nowait())

    async def close(self) -> None:
        """Closes the free connections (a loaned one is closed when it comes back)."""
        places, self._places = self._places, asyncio.Queue()
        while places.qsize():
            connection = places.get_nowait()
            if connection is not None:
                await _close_gracefully(connection)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        self._loop = None


async def _close_gracefully(connection: asyncpg.Connection) -> None:
    """Closes the session as a client should (after its statement, cancelled or not);
    ends it at once when that fails."""
    try:
        await connection.close(timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        connection.terminate()


def _close(connection: asyncpg.Connection | None) -> None:
    if connection is not None:
        with contextlib.suppress(Exception):  # a connection of a loop already closed
            connection.terminate()


_sessions: ReadSessions | None = None


def read_sessions() -> ReadSessions | None:
    """The process's read sessions, when open."""
    return _sessions


def open_read_sessions(connect: Connect, size: int) -> None:
    global _sessions
    _sessions = ReadSessions(connect, size)


async def close_read_sessions() -> None:
    global _sessions
    sessions, _sessions = _sessions, None
    if sessions is not None:
        await sessions.close()
