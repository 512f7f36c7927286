"""When each API key was last used, kept cheaply: a verification notes the time in this
process's memory (a dict assignment, no I/O), and `flush_key_use` writes what was noted,
one row per key used since the last flush, never moving a key's time backwards (another
process may have written a later one). So `last_used_at` lags by up to one flush interval
(`USAGEGRAPH_API_KEY_USE_FLUSH_SECONDS`) and the request path never writes."""

from __future__ import annotations

from datetime import datetime

from models import clock
from models.billing import time_param
from models.sql import Sql, transaction

_noted: dict[int, datetime] = {}  # api_key.id -> latest use seen by this process


def note_key_use(api_key_id: int) -> None:
    _noted[api_key_id] = clock.now()


async def flush_key_use() -> int:
    """Writes the noted uses (one transaction, keys in id order so that processes flushing
    at once lock them in the same order); the number of keys written. Uses noted while it
    runs wait for the next flush; a failed write keeps its uses for the next one."""
    if not _noted:
        return 0
    taken = dict(_noted)
    _noted.clear()

    async def work(db: Sql) -> None:
        for api_key_id, used_at in sorted(taken.items()):
            at = time_param(db, used_at)
            await db.run(
                "UPDATE api_key SET last_used_at = $2"
                " WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                api_key_id,
                at,
            )

    try:
        await transaction(work)
    except BaseException:
        for api_key_id, used_at in taken.items():
            if _noted.get(api_key_id, used_at) <= used_at:
                _noted[api_key_id] = used_at
        raise
    return len(taken)
