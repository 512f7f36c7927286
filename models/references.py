"""Resolving what callers name (a pool key, an End User id or external id) inside one
application, and an application's owner. A name outside the application is NOT_FOUND,
never a hint that it exists.

Pools, End Users and applications are never deleted and their keys never change, so a resolved id is
cached per process (bounded); misses are not cached."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from models.errors import NotFound, ValidationFailed, excerpt
from models.sql import Sql
from models.tenancy import Application

_CACHE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class EndUserRef:
    """Exactly one of `id` and `external_id`."""

    id: int | None = None
    external_id: str | None = None

    def validate(self) -> None:
        if (self.id is None) == (self.external_id is None):
            raise ValidationFailed(
                "reference an End User by exactly one of id and externalId", field="endUser"
            )
        if self.id is not None and not 0 < self.id < 2**63:
            raise ValidationFailed("no such End User id", field="endUser")
        if self.external_id is not None and not 0 < len(self.external_id) <= 200:
            raise ValidationFailed("externalId must be 1 to 200 characters", field="endUser")


@dataclass(frozen=True, slots=True)
class PoolRef:
    id: int
    key: str


class _Lru(OrderedDict):
    def remember(self, key: object, value: object) -> None:
        self[key] = value
        if len(self) > _CACHE_SIZE:
            self.popitem(last=False)


_pools = _Lru()
_end_users = _Lru()
_owners = _Lru()


def forget_references() -> None:
    """Empties the caches (when the process switches to another database)."""
    _pools.clear()
    _end_users.clear()
    _owners.clear()


def parse_id(value: object) -> int | None:
    """A GraphQL ID of ours as an integer; None for anything that cannot be one."""
    text = str(value)
    if not text.isdigit() or len(text) > 19:
        return None
    number = int(text)
    return number if 0 < number < 2**63 else None


async def organization_of(application_id: int) -> int | None:
    """The organization owning an application (applications never move), None if none."""
    owner = _owners.get(application_id)
    if owner is None:
        found = await Application.get_or_none(id=application_id)
        if found is None:
            return None
        owner = found.organization_id  # type: ignore[attr-defined]
        _owners.remember(application_id, owner)
    return owner


async def resolve_pool(db: Sql, application_id: int, key: str) -> PoolRef:
    cached = _pools.get((application_id, key))
    if cached is not None:
        return cached
    found = await db.value(
        "SELECT id FROM credit_pool WHERE application_id = $1 AND key = $2", application_id, key
    )
    if found is None:
        raise NotFound(f"no credit pool {excerpt(key)} in this application", field="pool")
    ref = PoolRef(id=found, key=key)
    _pools.remember((application_id, key), ref)
    return ref


async def resolve_end_user(db: Sql, application_id: int, ref: EndUserRef) -> int:
    ref.validate()
    cache_key = (application_id, ref.id, ref.external_id)
    cached = _end_users.get(cache_key)
    if cached is not None:
        return cached
    if ref.id is not None:
        found = await db.value(
            "SELECT id FROM end_user WHERE application_id = $1 AND id = $2", application_id, ref.id
        )
    else:
        found = await db.value(
            "SELECT id FROM end_user WHERE application_id = $1 AND external_id = $2",
            application_id,
            ref.external_id,
        )
    if found is None:
        raise NotFound("no such End User in this application", field="endUser")
    _end_users.remember(cache_key, found)
    return found
