"""What every resolver gets: the request and the authenticated principal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info as StrawberryInfo

from models.tenancy import ApiKeyRole


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an organization key (application_id None) or an application key."""

    organization_id: int
    application_id: int | None
    role: ApiKeyRole
    api_key_id: int
    key_id: str

    @property
    def can_write(self) -> bool:
        return self.role == ApiKeyRole.ADMIN

    @property
    def organization_scoped(self) -> bool:
        return self.application_id is None


@dataclass
class Context:
    request: Any
    response: Any
    principal: Principal | None = None
    connection_params: dict[str, Any] | None = None
    realtime: Any = None  # subscriptions.realtime.Realtime, wired by the app
    cache: dict[str, Any] = field(default_factory=dict)


Info = StrawberryInfo[Context, None]


def principal_of(info: Info) -> Principal:
    principal = info.context.principal
    if principal is None:  # the HTTP layer refuses unauthenticated requests before this
        raise PermissionError("not authenticated")
    return principal
