"""Authentication (docs/api.md#credentials): `Authorization: Bearer <credential>`, where the
credential is an API key (`ug_<key id>_<secret>`) or an End User token (`ugt_...`)."""

from __future__ import annotations

from models.access import Principal
from models.accounts import InvalidCredential, verify_api_key
from models.end_user_tokens import TOKEN_PREFIX, InvalidToken, verify_token
from models.references import organization_of
from models.tenancy import ApiKeyRole

# Far above any credential we issue (a key is 59 characters, a token a few hundred): a
# longer one is refused unread.
MAX_CREDENTIAL_LENGTH = 4_096


def bearer_credential(header: str | None) -> str:
    """The credential of an Authorization header, or InvalidCredential when the header is
    missing, of another scheme, or too long to be one of ours."""
    if not header:
        raise InvalidCredential("missing Authorization header: send 'Bearer <API key>'")
    if len(header) > MAX_CREDENTIAL_LENGTH:
        raise InvalidCredential("the credential is too long to be an API key or a token")
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise InvalidCredential("the Authorization header must be 'Bearer <API key>'")
    return credential.strip()


async def authenticate(header: str | None, secret: str) -> Principal:
    """The principal behind an Authorization header, or InvalidCredential."""
    credential = bearer_credential(header)
    if credential.startswith(TOKEN_PREFIX):
        return await _token_principal(credential, secret)
    api_key = await verify_api_key(credential)
    return Principal(
        organization_id=api_key.organization_id,  # type: ignore[attr-defined]
        application_id=api_key.application_id,  # type: ignore[attr-defined]
        role=ApiKeyRole(api_key.role),
        api_key_id=api_key.id,
        key_id=api_key.key_id,
    )


async def _token_principal(credential: str, secret: str) -> Principal:
    try:
        claims = verify_token(secret, credential)
    except InvalidToken as error:
        expired = error.application_id is not None  # only an expired token names its app
        raise InvalidCredential(
            error.message,
            code="TOKEN_EXPIRED" if expired else "UNAUTHENTICATED",
            application_id=error.application_id,
        ) from None
    organization_id = await organization_of(claims.application_id)
    if organization_id is None:
        raise InvalidCredential("invalid End User token")
    return Principal(
        organization_id=organization_id,
        application_id=claims.application_id,
        role=ApiKeyRole.READ,
        api_key_id=None,
        key_id=None,
        end_user_id=claims.end_user_id,
    )
