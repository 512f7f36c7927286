"""End User tokens and temporary codes (docs/api.md#credentials).

A token is a short-lived JWT (HS256, signed with USAGEGRAPH_SECRET) naming one End User of
one application; it reads and subscribes to that End User's balances only. A temporary code
is one-time and short-lived, kept as a hash, and exchanged for a token by a widget that must
never hold an API key."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from models import clock
from models.errors import DomainError, Expired, NotFound, ValidationFailed
from models.references import EndUserRef, resolve_end_user
from models.sql import Sql, transaction

TOKEN_TYPE = "usagegraph/end-user"
TOKEN_PREFIX = "ugt_"  # tells tokens from API keys (ug_...) at a glance and in logs
DEFAULT_TOKEN_TTL = 900
MAX_TOKEN_TTL = 86_400
CODE_TTL = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class EndUserClaims:
    application_id: int
    end_user_id: int
    expires_at: datetime


class InvalidToken(Exception):
    def __init__(self, message: str, application_id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.application_id = application_id  # for the request log, when it can be read


def _ttl(seconds: int | None) -> int:
    ttl = DEFAULT_TOKEN_TTL if seconds is None else seconds
    if not 30 <= ttl <= MAX_TOKEN_TTL:
        raise ValidationFailed(
            f"ttlSeconds must be between 30 and {MAX_TOKEN_TTL:,}", field="ttlSeconds"
        )
    return ttl


def sign_token(secret: str, application_id: int, end_user_id: int, ttl_seconds: int) -> IssuedToken:
    now = clock.now()
    expires_at = now + timedelta(seconds=ttl_seconds)
    claims = {
        "typ": TOKEN_TYPE,
        "app": application_id,
        "sub": str(end_user_id),
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    return IssuedToken(TOKEN_PREFIX + jwt.encode(claims, secret, algorithm="HS256"), expires_at)


def verify_token(secret: str, presented: str) -> EndUserClaims:
    if not presented.startswith(TOKEN_PREFIX):
        raise InvalidToken("not an End User token")
    raw = presented[len(TOKEN_PREFIX) :]
    try:
        # expiry is checked below, against the service's clock (models.clock)
        claims = jwt.decode(
            raw,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp", "sub", "app", "typ"], "verify_exp": False},
        )
    except jwt.InvalidTokenError:
        raise InvalidToken("invalid End User token") from None
    if not isinstance(claims["exp"], int):
        raise InvalidToken("invalid End User token")
    if claims["exp"] <= clock.now().timestamp():
        raise InvalidToken("the End User token has expired", claims.get("app"))
    if claims["typ"] != TOKEN_TYPE or not str(claims["sub"]).isdigit():
        raise InvalidToken("invalid End User token")
    return EndUserClaims(
        application_id=int(claims["app"]),
        end_user_id=int(claims["sub"]),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


async def issue_end_user_token(
    secret: str, application_id: int, end_user: EndUserRef, ttl_seconds: int | None = None
) -> IssuedToken:
    ttl = _ttl(ttl_seconds)

    async def work(db: Sql) -> int:
        return await resolve_end_user(db, application_id, end_user)

    end_user_id = await transaction(work)
    return sign_token(secret, application_id, end_user_id, ttl)


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str
    expires_at: datetime


async def create_temporary_code(
    application_id: int, end_user: EndUserRef, token_ttl_seconds: int | None = None
) -> IssuedCode:
    ttl = _ttl(token_ttl_seconds)
    code = secrets.token_urlsafe(24)
    expires_at = clock.now() + CODE_TTL

    async def work(db: Sql) -> None:
        end_user_id = await resolve_end_user(db, application_id, end_user)
        await db.run(
            "INSERT INTO temporary_code (code_hash, application_id, end_user_id,"
            " token_ttl_seconds, created_at, expires_at) VALUES ($1, $2, $3, $4, now(), $5)",
            _hash(code),
            application_id,
            end_user_id,
            ttl,
            expires_at,
        )

    await transaction(work)
    return IssuedCode(code, expires_at)


async def exchange_temporary_code(secret: str, code: str) -> tuple[IssuedToken, int]:
    """(token, application id). One use: the code is spent by the statement that reads it,
    so two concurrent exchanges cannot both succeed. A used or expired code is EXPIRED."""
    if not 0 < len(code) <= 200:
        raise ValidationFailed("code must be 1 to 200 characters", field="code")

    async def work(db: Sql) -> dict:
        spent = await db.row(
            "UPDATE temporary_code SET used_at = now() WHERE code_hash = $1"
            " AND used_at IS NULL AND expires_at > now()"
            " RETURNING application_id, end_user_id, token_ttl_seconds",
            _hash(code),
        )
        if spent is not None:
            return spent
        known = await db.row(
            "SELECT application_id, used_at FROM temporary_code WHERE code_hash = $1", _hash(code)
        )
        if known is None:
            raise NotFound("unknown temporary code", field="code")
        error: DomainError = Expired(
            "this temporary code was already used"
            if known["used_at"] is not None
            else "this temporary code has expired",
            field="code",
        )
        error.application_id = known["application_id"]  # type: ignore[attr-defined]
        raise error

    spent = await transaction(work)
    token = sign_token(
        secret, spent["application_id"], spent["end_user_id"], spent["token_ttl_seconds"]
    )
    return token, spent["application_id"]
