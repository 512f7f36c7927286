"""API key authentication (SPEC §8): `Authorization: Bearer ug_<key id>_<secret>`."""

from __future__ import annotations

from models.accounts import InvalidCredential, verify_api_key
from models.tenancy import ApiKeyRole
from resolvers.context import Principal


def bearer_credential(header: str | None) -> str:
    if not header:
        raise InvalidCredential("missing Authorization header: send 'Bearer <API key>'")
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise InvalidCredential("the Authorization header must be 'Bearer <API key>'")
    return credential.strip()


async def authenticate(header: str | None) -> Principal:
    """The principal behind an Authorization header, or InvalidCredential."""
    api_key = await verify_api_key(bearer_credential(header))
    return Principal(
        organization_id=api_key.organization_id,  # type: ignore[attr-defined]
        application_id=api_key.application_id,  # type: ignore[attr-defined]
        role=ApiKeyRole(api_key.role),
        api_key_id=api_key.id,
        key_id=api_key.key_id,
    )
