"""`viewer`: who the credential belongs to."""

from __future__ import annotations

import strawberry

from models.credits import EndUser as EndUserRow
from models.tenancy import ApiKey as ApiKeyRow
from models.tenancy import Application as ApplicationRow
from models.tenancy import Organization as OrganizationRow
from resolvers.api_keys import KEYS_DESCRIPTION, ApiKey, ApiKeyRole, resolve_api_keys
from resolvers.applications import Application
from resolvers.context import Info, principal_of
from resolvers.end_users import EndUser


@strawberry.type
class Organization:
    id: strawberry.ID
    name: str

    @strawberry.field(
        description=KEYS_DESCRIPTION.format(
            who="every key of the organization; an application key's, those of its application"
        )
    )
    async def api_keys(self, info: Info, first: int = 100) -> list[ApiKey]:
        return await resolve_api_keys(info, int(self.id), None, first)


@strawberry.type
class Viewer:
    organization: Organization
    application: Application | None = strawberry.field(
        description="The application an application key is scoped to; null for organization keys."
    )
    api_key: ApiKey | None = strawberry.field(description="null for an End User token")
    end_user: EndUser | None = strawberry.field(description="The End User a token belongs to.")
    role: ApiKeyRole


async def resolve_viewer(info: Info) -> Viewer:
    principal = principal_of(info)
    organization = await OrganizationRow.get(id=principal.organization_id)
    application = None
    if principal.application_id is not None:
        application = Application.from_row(await ApplicationRow.get(id=principal.application_id))
    api_key = None
    if principal.api_key_id is not None:
        api_key = ApiKey.from_row(await ApiKeyRow.get(id=principal.api_key_id))
    end_user = None
    if principal.end_user_id is not None:
        end_user = EndUser.from_row(await EndUserRow.get(id=principal.end_user_id))
    return Viewer(
        organization=Organization(id=strawberry.ID(str(organization.id)), name=organization.name),
        application=application,
        api_key=api_key,
        end_user=end_user,
        role=principal.role,
    )
