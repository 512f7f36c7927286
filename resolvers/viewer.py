"""`viewer`: who the credential belongs to."""

from __future__ import annotations

import strawberry

from models.tenancy import ApiKey as ApiKeyRow
from models.tenancy import Application as ApplicationRow
from models.tenancy import Organization as OrganizationRow
from resolvers.api_keys import ApiKey, ApiKeyRole
from resolvers.applications import Application
from resolvers.context import Info, principal_of


@strawberry.type
class Organization:
    id: strawberry.ID
    name: str


@strawberry.type
class Viewer:
    organization: Organization
    application: Application | None = strawberry.field(
        description="The application an application key is scoped to; null for organization keys."
    )
    api_key: ApiKey
    role: ApiKeyRole


async def resolve_viewer(info: Info) -> Viewer:
    principal = principal_of(info)
    organization = await OrganizationRow.get(id=principal.organization_id)
    application = None
    if principal.application_id is not None:
        application = Application.from_row(await ApplicationRow.get(id=principal.application_id))
    return Viewer(
        organization=Organization(id=strawberry.ID(str(organization.id)), name=organization.name),
        application=application,
        api_key=ApiKey.from_row(await ApiKeyRow.get(id=principal.api_key_id)),
        role=principal.role,
    )
