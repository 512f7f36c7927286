"""End Users of an application, created or updated in bulk by external id."""

from __future__ import annotations

from dataclasses import dataclass

from models.credits import EndUser
from models.errors import ValidationFailed, excerpt
from models.sql import Sql, transaction, values_list

MAX_UPSERT = 1_000


@dataclass(frozen=True, slots=True)
class EndUserInput:
    external_id: str
    name: str | None = None
    email: str | None = None


def _validate(items: list[EndUserInput]) -> None:
    if not 0 < len(items) <= MAX_UPSERT:
        raise ValidationFailed(f"send 1 to {MAX_UPSERT:,} End Users", field="endUsers")
    seen: set[str] = set()
    for index, item in enumerate(items):
        field = f"endUsers.{index}"
        if not 0 < len(item.external_id) <= 200 or not item.external_id.strip():
            raise ValidationFailed("externalId must be 1 to 200 characters", field=field)
        if item.external_id in seen:
            raise ValidationFailed(
                f"externalId {excerpt(item.external_id)} is repeated", field=field
            )
        seen.add(item.external_id)
        if item.name is not None and len(item.name) > 200:
            raise ValidationFailed("name must be at most 200 characters", field=field)
        if item.email is not None and (len(item.email) > 320 or "@" not in item.email):
            raise ValidationFailed("email is not an email address", field=field)


async def upsert_end_users(application_id: int, items: list[EndUserInput]) -> list[EndUser]:
    """Creates the End Users that are new and updates name and email of the others, in one
    statement (safe under concurrent upserts of the same external ids)."""
    _validate(items)

    async def work(db: Sql) -> list[int]:
        args: list[object] = []
        # in one order (by external id) for every caller: upserts of overlapping End Users
        # then wait on each other's rows in the same order instead of deadlocking
        for item in sorted(items, key=lambda item: item.external_id):
            args += [application_id, item.external_id, item.name, item.email]
        rows = await db.rows(
            "INSERT INTO end_user (application_id, external_id, name, email, created_at) VALUES "
            + values_list(len(items), 4, ", now()")
            + " ON CONFLICT (application_id, external_id) DO UPDATE SET"
            " name = COALESCE(excluded.name, end_user.name),"
            " email = COALESCE(excluded.email, end_user.email) RETURNING id, external_id",
            *args,
        )
        by_external = {row["external_id"]: row["id"] for row in rows}
        return [by_external[item.external_id] for item in items]

    ids = await transaction(work)
    found = {user.id: user for user in await EndUser.filter(id__in=ids)}
    return [found[i] for i in ids]
