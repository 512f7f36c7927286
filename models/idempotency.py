"""Idempotency keys (docs/ledger.md rule 3), scoped per application.

The key is claimed by inserting its record first in the write's transaction. A second
writer with the same key blocks on that insert until the first commits (then it reads the
stored result and answers it as a replay) or rolls back (then it proceeds itself). Only
applied writes are recorded: a write that failed can be retried with its key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from models.errors import IdempotencyConflict, ValidationFailed
from models.sql import Sql, delete_older_than, dumps, loads

MAX_KEY_LENGTH = 255
KEPT_AT_LEAST = timedelta(days=30)  # docs/ledger.md rule 3


def request_fingerprint(operation: str, arguments: dict[str, Any]) -> str:
    return hashlib.sha256(dumps([operation, sorted(arguments.items())]).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed key (`record_id`) or the stored result of an earlier write (`replay`)."""

    record_id: int | None
    replay: Any = None


def validate_key(key: str | None) -> None:
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ValidationFailed(
            f"idempotencyKey must be 1 to {MAX_KEY_LENGTH} characters", field="idempotencyKey"
        )


async def claim_key(
    db: Sql, application_id: int, key: str, operation: str, fingerprint: str
) -> Claim:
    record_id = await db.value(
        "INSERT INTO idempotency_record (application_id, key, operation, request_hash,"
        " created_at) VALUES ($1, $2, $3, $4, now())"
        " ON CONFLICT (application_id, key) DO NOTHING RETURNING id",
        application_id,
        key,
        operation,
        fingerprint,
    )
    if record_id is not None:
        return Claim(record_id=record_id)
    stored = await db.row(
        "SELECT operation, request_hash, response FROM idempotency_record"
        " WHERE application_id = $1 AND key = $2",
        application_id,
        key,
    )
    if stored is None or stored["operation"] != operation or stored["request_hash"] != fingerprint:
        raise IdempotencyConflict(
            "this idempotency key was already used with other arguments", field="idempotencyKey"
        )
    return Claim(record_id=None, replay=loads(stored["response"]))


async def store_result(db: Sql, record_id: int, result: Any) -> None:
    await db.run(
        "UPDATE idempotency_record SET response = $2 WHERE id = $1", record_id, dumps(result)
    )


async def forget_keys_before(cutoff: datetime) -> int:
    """Deletes idempotency records created before `cutoff`, never one younger than 30 days
    (docs/ledger.md rule 3: a retry within 30 days is still answered as a replay); the number
    deleted."""
    oldest_allowed = datetime.now(UTC) - KEPT_AT_LEAST
    return await delete_older_than("idempotency_record", "created_at", min(cutoff, oldest_allowed))
