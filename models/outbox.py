"""The transactional outbox (docs/ledger.md#the-outbox): live events written in the
transaction that caused them, read in id order by the one relay that publishes them after
commit, and deleted once published (the ledger is the record)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from models.events import OutboxItem
from models.sql import Sql, values_list

# Rows per INSERT: a threshold change can move a whole pool's End Users, and a statement's
# parameters are bounded (PostgreSQL 32,767, SQLite 32,766).
ROWS_PER_STATEMENT = 1_000


def payload_json(event: OutboxItem) -> str:
    """An event's outbox payload. orjson: this runs for every balance a ledger write moves,
    and an event holds only integers, strings and None (the broker splices the text)."""
    return orjson.dumps(event.to_json()).decode()


async def write_events(db: Sql, application_id: int, events: Sequence[OutboxItem]) -> None:
    """Writes the events in the caller's transaction: published after it commits, never for
    a rolled-back one."""
    db.wrote_outbox = True  # wakes the relay after commit
    for first in range(0, len(events), ROWS_PER_STATEMENT):
        chunk = events[first : first + ROWS_PER_STATEMENT]
        args: list[Any] = []
        for event in chunk:
            args += [application_id, event.topic, payload_json(event)]
        await db.run(
            "INSERT INTO outbox_event (application_id, topic, payload, created_at) VALUES "
            + values_list(len(chunk), 3, ", now()"),
            *args,
        )


async def pending_rows(db: Sql, limit: int) -> list[dict[str, Any]]:
    """The oldest unpublished rows, in id order (commit order per balance)."""
    return await db.rows(
        "SELECT id, application_id, topic, payload FROM outbox_event ORDER BY id LIMIT $1",
        limit,
    )


async def delete_published(db: Sql, ids: list[int], returning: bool = False) -> list[int]:
    """Deletes published rows; with `returning`, the ids of those this call deleted (a
    relay that lost its lead may have deleted some of them already)."""
    placeholders = ",".join(f"${i}" for i in range(1, len(ids) + 1))
    statement = f"DELETE FROM outbox_event WHERE id IN ({placeholders})"
    if not returning:
        await db.run(statement, *ids)
        return []
    return [row["id"] for row in await db.rows(statement + " RETURNING id", *ids)]


async def oldest_pending_at(db: Sql) -> datetime | str | None:
    """When the oldest unpublished row was written (None when none waits)."""
    return await db.value("SELECT min(created_at) FROM outbox_event")


def broker_message(row: dict[str, Any]) -> bytes:
    """A row as published: `{"topic", "outbox_id", "event"}`. The payload is already JSON
    text: it is spliced in, not decoded and encoded again (the relay runs on the server's
    event loop)."""
    payload = row["payload"]
    if not isinstance(payload, str):  # a driver that decodes JSON columns itself
        payload = json.dumps(payload, separators=(",", ":"))
    return (
        f'{{"topic":{json.dumps(row["topic"])},"outbox_id":{int(row["id"])},"event":{payload}}}'
    ).encode()
