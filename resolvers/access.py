"""Which applications a principal may read or write (docs/api.md#credentials). Anything outside
answers NOT_FOUND, never a hint that it exists."""

from __future__ import annotations

from models.errors import Forbidden, NotFound
from models.references import organization_of
from resolvers.context import Principal
from resolvers.errors import parse_id


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
