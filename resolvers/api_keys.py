"""API keys: listing, creation (the secret is shown once) and revocation."""

from __future__ import annotations

from datetime import datetime

import strawberry

from models.access import require_api_key, require_write, visible_application
from models.accounts import create_api_key, list_api_keys, revoke_api_key
from models.errors import Forbidden, NotFound
from models.references import parse_id
from models.tenancy import ApiKey as ApiKeyRow
from models.tenancy import ApiKeyRole as DomainApiKeyRole
from resolvers.context import Info, principal_of
from resolvers.errors import UserError, errors_as_query_errors, errors_in_payload

ApiKeyRole = strawberry.enum(DomainApiKeyRole, name="ApiKeyRole")


@strawberry.type
class ApiKey:
    id: strawberry.ID
    key_id: str = strawberry.field(description="The public part of the key, as in the request log.")
    name: str
    role: ApiKeyRole
    application_id: strawberry.ID | None
    created_at: datetime
    last_used_at: datetime | None = strawberry.field(
        description="When the key was last accepted; written every minute or so"
        " (USAGEGRAPH_API_KEY_USE_FLUSH_SECONDS), so it may lag that much. Null: never used."
    )
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiKeyRow) -> ApiKey:
        app = row.application_id  # type: ignore[attr-defined]
        return cls(
            id=strawberry.ID(str(row.id)),
            key_id=row.key_id,
            name=row.name,
            role=row.role,
            application_id=None if app is None else strawberry.ID(str(app)),
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )


@strawberry.input
class CreateApiKeyInput:
    application_id: strawberry.ID | None = strawberry.field(
        default=None, description="Without it, the key is organization-scoped."
    )
    name: str
    role: ApiKeyRole


@strawberry.type
class CreateApiKeyPayload:
    api_key: ApiKey | None = None
    secret: str | None = strawberry.field(default=None, description="The whole key, shown once.")
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RevokeApiKeyPayload:
    api_key: ApiKey | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@errors_in_payload(CreateApiKeyPayload)
async def resolve_create_api_key(info: Info, input: CreateApiKeyInput) -> CreateApiKeyPayload:
    principal = principal_of(info)
    application_id = None
    if input.application_id is not None:
        application_id = await visible_application(principal, input.application_id)
    elif not principal.organization_scoped:
        raise NotFound("an application key cannot create organization keys", field="applicationId")
    require_write(principal)  # after visibility: another application's is NOT_FOUND
    issued = await create_api_key(
        principal.organization_id, input.name, DomainApiKeyRole(input.role), application_id
    )
    return CreateApiKeyPayload(api_key=ApiKey.from_row(issued.api_key), secret=issued.secret)


async def _visible_key(info: Info, key_id: strawberry.ID) -> ApiKeyRow:
    principal = principal_of(info)
    parsed = parse_id(key_id)
    row = None if parsed is None else await ApiKeyRow.get_or_none(id=parsed)
    visible = row is not None and row.organization_id == principal.organization_id  # type: ignore[attr-defined]
    if visible and not principal.organization_scoped:
        visible = row.application_id == principal.application_id  # type: ignore[union-attr, attr-defined]
    if not visible or row is None:
        raise NotFound("API key not found", field="id")
    return row


@errors_in_payload(RevokeApiKeyPayload)
async def resolve_revoke_api_key(info: Info, id: strawberry.ID) -> RevokeApiKeyPayload:
    row = await _visible_key(info, id)
    require_write(principal_of(info))  # after visibility: another's key is NOT_FOUND
    row = await revoke_api_key(row)
    return RevokeApiKeyPayload(api_key=ApiKey.from_row(row))


KEYS_DESCRIPTION = (
    "API keys, newest first, revoked ones included; never their secrets. Needs an ADMIN"
    " key: {who}. A READ key gets FORBIDDEN, an End User token NOT_FOUND."
)


async def resolve_api_keys(
    info: Info, organization_id: int, application_id: int | None, first: int
) -> list[ApiKey]:
    """Keys of the organization or of one application (the caller checked it is visible),
    as far as an ADMIN credential sees them: an application key sees its application's."""
    principal = principal_of(info)
    with errors_as_query_errors():
        require_api_key(principal)
        if not principal.organization_scoped:
            application_id = principal.application_id
        if not principal.can_write:
            raise Forbidden("listing API keys needs an ADMIN key")
        rows = await list_api_keys(organization_id, application_id, first)
    return [ApiKey.from_row(row) for row in rows]
