"""Who is calling and which applications they may read or write (docs/api.md#credentials).
GraphQL resolvers and REST routes both check a caller through these rules; anything outside
answers NOT_FOUND, never a hint that it exists."""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import Forbidden, NotFound
from models.references import organization_of, parse_id
from models.tenancy import ApiKeyRole


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an organization key (application_id None), an application key, or
    an End User token (end_user_id set: it reads that End User's balances only)."""

    organization_id: int
    application_id: int | None
    role: ApiKeyRole
    api_key_id: int | None
    key_id: str | None
    end_user_id: int | None = None

    @property
    def can_write(self) -> bool:
        return self.role == ApiKeyRole.ADMIN

    @property
    def organization_scoped(self) -> bool:
        return self.application_id is None


async def visible_application(principal: Principal, application_id: object) -> int:
    """The application id if the principal may see it, else NotFound."""
    parsed = parse_id(application_id)
    if parsed is None:
        raise NotFound("application not found", field="applicationId")
    if principal.application_id is not None:
        if parsed != principal.application_id:
            raise NotFound("application not found", field="applicationId")
        return parsed
    if await organization_of(parsed) != principal.organization_id:
        raise NotFound("application not found", field="applicationId")
    return parsed


async def writable_application(principal: Principal, application_id: object) -> int:
    """As `visible_application`, and the key may write (ADMIN)."""
    parsed = await visible_application(principal, application_id)
    require_write(principal)
    return parsed


def require_write(principal: Principal) -> None:
    if not principal.can_write:
        raise Forbidden("this API key is read-only")


def require_api_key(principal: Principal) -> None:
    """End User tokens see their own balances and nothing else of the application."""
    if principal.end_user_id is not None:
        raise NotFound("not visible to an End User token")


def require_end_user(principal: Principal, end_user_id: int) -> None:
    if principal.end_user_id is not None and principal.end_user_id != end_user_id:
        raise NotFound("End User not found", field="endUser")
