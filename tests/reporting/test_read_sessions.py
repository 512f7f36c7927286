"""The sessions of the reads planned once (models/read_sessions.py), on the real PostgreSQL:
a few connections lent for one statement each, none left in a bad state by a refused
statement, a terminated backend or a read cancelled midway. On SQLite there are none."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from api.database import plain_postgres_dsn, read_session_connect
from models.read_sessions import ReadSessions, read_sessions
from models.sql import single_statement
from models.transient import is_transient
from resolvers.runtime.versions import fast_paths_enabled
from tests.conftest import Backend

PID = "SELECT pg_backend_pid() AS pid"


async def _pid(sessions: ReadSessions, statement: str = PID) -> int:
    rows = await sessions.fetch(statement, ())
    return int(rows[0]["pid"])


async def _alive(backend: Backend, pids: set[int]) -> set[int]:
    admin = await asyncpg.connect(plain_postgres_dsn(backend.settings.database_url))
    try:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])", list(pids)
        )
    finally:
        await admin.close()
    return {row["pid"] for row in rows}


async def _read_once_seen_closed(sessions: ReadSessions) -> int:
    """A read after its session's backend was terminated: the next loan replaces the
    session once the client has seen the socket close; a loan just before that fails as a
    transient failure, and the one after it gets a new session."""
    for _ in range(50):
        try:
            return await _pid(sessions)
        except Exception as error:
            assert is_transient(error), error
            await asyncio.sleep(0.05)
    raise AssertionError("no read succeeded after the backend was terminated")


async def _terminate(backend: Backend, pid: int) -> None:
    admin = await asyncpg.connect(plain_postgres_dsn(backend.settings.database_url))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


@pytest.fixture
async def sessions(backend: Backend):  # type: ignore[no-untyped-def]
    if not backend.postgres:
        # SQLite: one connection, no sessions to lend; the reads take Tortoise's
        assert read_sessions() is None
        rows = await single_statement(lambda db: db.records("SELECT 7 AS n", planned_once=True))
        assert rows[0]["n"] == 7
        yield None
        return
    lent = ReadSessions(read_session_connect(backend.settings), 2)
    try:
        yield lent
    finally:
        await lent.close()


async def test_planned_once_reads_go_through_the_process_sessions(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the fast paths on, the reads planned once run on the process's sessions, which
    plan generically; with them off, on Tortoise's pool of the same sessions."""
    if not backend.postgres:
        assert read_sessions() is None
        return
    process = read_sessions()
    assert (process is not None) == fast_paths_enabled()
    modes = await asyncio.gather(
        *(
            single_statement(
                lambda db: db.records(
                    "SELECT current_setting('plan_cache_mode') AS m", planned_once=True
                )
            )
            for _ in range(12)
        )
    )
    assert {rows[0]["m"] for rows in modes} == {"force_generic_plan"}
    if process is not None:  # each of them was lent one of the process's sessions
        lent = []
        fetch = process.fetch

        async def noted(statement: str, args: Sequence[Any]) -> list[asyncpg.Record]:
            lent.append(statement)
            return await fetch(statement, args)

        monkeypatch.setattr(process, "fetch", noted)
        await asyncio.gather(
            *(single_statement(lambda db: db.records(PID, planned_once=True)) for _ in range(5))
        )
        assert lent == [PID] * 5


async def test_many_reads_share_at_most_their_size_of_sessions(
    backend: Backend, sessions: ReadSessions | None
) -> None:
    if sessions is None:
        return
    reads = [_pid(sessions, "SELECT pg_backend_pid() AS pid, pg_sleep(0.005)") for _ in range(40)]
    pids = set(await asyncio.gather(*reads))
    assert 1 <= len(pids) <= 2
    rows = await sessions.fetch("SELECT current_setting('plan_cache_mode') AS m", ())
    assert rows[0]["m"] == "force_generic_plan"


async def test_a_refused_statement_keeps_its_session(
    backend: Backend, sessions: ReadSessions | None
) -> None:
    if sessions is None:
        return
    first = await _pid(sessions)
    with pytest.raises(asyncpg.DivisionByZeroError):
        await sessions.fetch("SELECT 1 / $1::int AS x", (0,))
    # the same session answers the next read: one place was free, and it went back
    again = await asyncio.gather(_pid(sessions), _pid(sessions))
    assert first in again


async def test_a_terminated_session_is_replaced(backend: Backend) -> None:
    """A backend terminated while idle is replaced on the next loan; one terminated while
    it reads fails that read as a transient failure (the API answers 503), and the read
    after it gets a new session."""
    if not backend.postgres:
        return
    one = ReadSessions(read_session_connect(backend.settings), 1)
    try:
        idle = await _pid(one)
        await _terminate(backend, idle)
        replaced = await _read_once_seen_closed(one)
        assert replaced != idle

        reading = asyncio.ensure_future(_pid(one, "SELECT pg_backend_pid() AS pid, pg_sleep(5)"))
        await asyncio.sleep(0.3)
        await _terminate(backend, replaced)
        with pytest.raises(Exception) as failed:
            await asyncio.wait_for(reading, 10)
        assert is_transient(failed.value), failed.value
        after = await _pid(one)
        assert after not in (idle, replaced)
        assert await _alive(backend, {idle, replaced}) == set()
    finally:
        await one.close()


async def test_a_cancelled_read_gives_its_place_back(
    backend: Backend, sessions: ReadSessions | None
) -> None:
    """A read cancelled midway closes its session (its state is unknown) and frees its
    place: with every place taken by cancelled reads, the next read still runs at once."""
    if sessions is None:
        return
    slow = [
        asyncio.ensure_future(_pid(sessions, "SELECT pg_backend_pid() AS pid, pg_sleep(30)"))
        for _ in range(2)
    ]
    await asyncio.sleep(0.3)
    for read in slow:
        read.cancel()
    await asyncio.gather(*slow, return_exceptions=True)
    fresh = await asyncio.wait_for(_pid(sessions), 5)
    assert fresh > 0
    sleeping = -1
    for _ in range(100):  # the cancelled reads' backends end with their sessions
        rows = await sessions.fetch(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%'"
            " AND pid <> pg_backend_pid()",
            (),
        )
        sleeping = rows[0]["n"]
        if sleeping == 0:
            break
        await asyncio.sleep(0.1)
    assert sleeping == 0  # (their statements were cancelled: pg_sleep(30) had 30 s to run)


async def test_closing_ends_the_sessions(backend: Backend, sessions: ReadSessions | None) -> None:
    if sessions is None:
        return
    pids = set(
        await asyncio.gather(
            *(_pid(sessions, "SELECT pg_backend_pid() AS pid, pg_sleep(0.05)") for _ in range(4))
        )
    )
    assert await _alive(backend, pids) == pids
    await sessions.close()
    for _ in range(50):
        if not await _alive(backend, pids):
            break
        await asyncio.sleep(0.05)
    assert await _alive(backend, pids) == set()
    assert await _pid(sessions) not in pids  # a later read opens a session anew
