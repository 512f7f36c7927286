"""End User tokens and temporary codes: how a widget reads one End User's balances
without ever holding an API key."""

from __future__ import annotations

from datetime import datetime

import strawberry

from models.access import require_api_key, visible_application
from models.end_user_tokens import (
    create_temporary_code,
    exchange_temporary_code,
    issue_end_user_token,
)
from models.errors import DomainError
from resolvers.context import Info, note_application, principal_of
from resolvers.end_users import EndUserRef
from resolvers.errors import UserError, errors_in_payload


@strawberry.input
class IssueEndUserTokenInput:
    application_id: strawberry.ID
    end_user: EndUserRef
    ttl_seconds: int | None = strawberry.field(
        default=None, description="Token lifetime, 30 s to 24 h (default 15 min)."
    )


@strawberry.type
class EndUserTokenPayload:
    token: str | None = None
    expires_at: datetime | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class TemporaryCodePayload:
    code: str | None = strawberry.field(default=None, description="One use, valid 2 minutes.")
    expires_at: datetime | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


async def _application_for_tokens(info: Info, application_id: strawberry.ID) -> int:
    principal = principal_of(info)
    require_api_key(principal)  # a token cannot mint tokens
    return await visible_application(principal, application_id)


@errors_in_payload(EndUserTokenPayload)
async def resolve_issue_token(info: Info, input: IssueEndUserTokenInput) -> EndUserTokenPayload:
    application_id = await _application_for_tokens(info, input.application_id)
    issued = await issue_end_user_token(
        info.context.secret, application_id, input.end_user.to_domain(), input.ttl_seconds
    )
    return EndUserTokenPayload(token=issued.token, expires_at=issued.expires_at)


@errors_in_payload(TemporaryCodePayload)
async def resolve_create_code(info: Info, input: IssueEndUserTokenInput) -> TemporaryCodePayload:
    application_id = await _application_for_tokens(info, input.application_id)
    issued = await create_temporary_code(
        application_id, input.end_user.to_domain(), input.ttl_seconds
    )
    return TemporaryCodePayload(code=issued.code, expires_at=issued.expires_at)


@errors_in_payload(EndUserTokenPayload)
async def resolve_exchange_code(info: Info, code: str) -> EndUserTokenPayload:
    """Needs no credential: the code is the credential, and it works once."""
    try:
        issued, application_id = await exchange_temporary_code(info.context.secret, code)
    except DomainError as error:
        # A spent or expired code still names its application: log the attempt there.
        note_application(info, getattr(error, "application_id", None))
        raise
    note_application(info, application_id)
    return EndUserTokenPayload(token=issued.token, expires_at=issued.expires_at)
