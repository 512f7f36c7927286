"""Organizations, applications and API keys (docs/ledger.md#domain, docs/api-keys.md)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from tortoise.transactions import in_transaction

from models import clock
from models.api_key_use import note_key_use
from models.credits import CreditPool
from models.errors import NotFound, ValidationFailed
from models.tenancy import ApiKey, ApiKeyRole, Application, Organization

KEY_PREFIX = "ug"
# The shape of a presented key, with room around what `create_api_key` issues (12 hex
# digits, 43 URL-safe characters): anything else is refused before any lookup, so no
# presented text can fail in the database (a key id longer than its column, a NUL).
_KEY_SHAPE = re.compile(KEY_PREFIX + r"_([0-9A-Za-z]{1,32})_([0-9A-Za-z_-]{1,128})")
BUILT_IN_POOLS = {"ai": "AI Credits", "inbox_preview": "Inbox Preview Credits"}


@dataclass(frozen=True, slots=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # the whole `ug_<key id>_<secret>` string, shown once


def hash_secret(secret: str) -> str:
    # The secret is 256 random bits, so a fast hash is as strong as a slow one here.
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a presented key, or None when it is not of our shape."""
    match = _KEY_SHAPE.fullmatch(presented)
    return (match[1], match[2]) if match else None


def secret_matches(api_key: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(api_key.secret_hash, hash_secret(secret))


def _name(value: str, field: str = "name") -> str:
    value = value.strip()
    if not 0 < len(value) <= 200:
        raise ValidationFailed(f"{field} must be 1 to 200 characters", field=field)
    return value


async def create_api_key(
    organization_id: int,
    name: str,
    role: ApiKeyRole,
    application_id: int | None = None,
) -> IssuedKey:
    """A new key; without `application_id` it is organization-scoped."""
    name = _name(name)
    if application_id is not None and not await Application.exists(
        id=application_id, organization_id=organization_id
    ):
        raise NotFound("no such application", field="applicationId")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    api_key = await ApiKey.create(
        key_id=key_id,
        organization_id=organization_id,
        application_id=application_id,
        name=name,
        role=role,
        secret_hash=hash_secret(secret),
        created_at=clock.now(),
    )
    return IssuedKey(api_key=api_key, secret=f"{KEY_PREFIX}_{key_id}_{secret}")


MAX_API_KEYS_PAGE = 500  # as every list field (resolvers.pools.MAX_PAGE, the cost limit)


async def list_api_keys(
    organization_id: int, application_id: int | None = None, first: int = 100
) -> list[ApiKey]:
    """The organization's keys (organization-scoped and of every application), or one
    application's, newest first, revoked ones included."""
    if not 1 <= first <= MAX_API_KEYS_PAGE:
        raise ValidationFailed(f"first must be between 1 and {MAX_API_KEYS_PAGE:,}", field="first")
    keys = ApiKey.filter(organization_id=organization_id)
    if application_id is not None:
        keys = keys.filter(application_id=application_id)
    return await keys.order_by("-id").limit(first)


async def create_organization(name: str) -> tuple[Organization, IssuedKey]:
    """A new organization and its first organization-scoped ADMIN key."""
    name = _name(name)
    async with in_transaction("default"):
        organization = await Organization.create(name=name, created_at=clock.now())
        issued = await create_api_key(organization.id, "initial key", ApiKeyRole.ADMIN)
    return organization, issued


async def create_application(
    organization_id: int, name: str, plan: str | None = None
) -> Application:
    """A new application with the built-in pools (`ai`, `inbox_preview`)."""
    name = _name(name)
    if plan is not None:
        plan = _name(plan, "plan")
    async with in_transaction("default"):
        application = await Application.create(
            organization_id=organization_id, name=name, plan=plan, created_at=clock.now()
        )
        await CreditPool.bulk_create(
            [
                CreditPool(
                    application_id=application.id, key=key, name=title, created_at=clock.now()
                )
                for key, title in BUILT_IN_POOLS.items()
            ]
        )
    return application


# ------------------------------------------------------------------------ key verification

_TTL_SECONDS = 2.0  # how long another process may still accept a key revoked elsewhere
_CACHE_LIMIT = 10_000
_verified: dict[str, tuple[float, str, ApiKey]] = {}


class InvalidCredential(Exception):
    """The key is malformed, unknown, wrong or revoked. `key_id` names it (and so its
    application, for the request log) whenever the presented key had our shape; an
    expired End User token names its `application_id`. `code` tells the cases apart in
    the log."""

    def __init__(
        self,
        message: str,
        key_id: str | None = None,
        *,
        code: str = "UNAUTHENTICATED",
        application_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.key_id = key_id
        self.code = code
        self.application_id = application_id


async def verify_api_key(presented: str) -> ApiKey:
    """The live key behind `presented`. A verified key is remembered briefly so a busy
    client does not cost a query per request; revocation in this process is immediate."""
    parts = split_key(presented)
    if parts is None:
        raise InvalidCredential("malformed API key: expected ug_<key id>_<secret>")
    key_id, secret = parts
    now = time.monotonic()
    cached = _verified.get(key_id)
    if cached is not None and now - cached[0] < _TTL_SECONDS and cached[1] == secret:
        api_key = cached[2]
    else:
        found = await ApiKey.get_or_none(key_id=key_id)
        if found is None or not secret_matches(found, secret):
            raise InvalidCredential("unknown API key or wrong secret", key_id=key_id)
        api_key = found
        if len(_verified) >= _CACHE_LIMIT:
            _verified.clear()
        _verified[key_id] = (now, secret, api_key)
    if api_key.revoked_at is not None:
        raise InvalidCredential(
            "this API key has been revoked", key_id=key_id, code="API_KEY_REVOKED"
        )
    note_key_use(api_key.id)
    return api_key


async def revoke_api_key(api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = clock.now()
        await api_key.save(update_fields=["revoked_at"])
    _verified.pop(api_key.key_id, None)
    return api_key


@dataclass(frozen=True, slots=True)
class ApplicationLine:
    """An application as a read shows it (its row, read raw)."""

    id: int
    name: str
    plan: str | None
    created_at: datetime
