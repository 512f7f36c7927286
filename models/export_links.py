"""Signed export links (docs/billing-and-export.md#export): a short-lived JWT (HS256,
USAGEGRAPH_SECRET) naming one export exactly (application, type, range, format) and the API key
that asked for it, so a browser can download it without holding the key. Any change to the URL's
parameters, an expired signature or a revoked key refuses the download."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from models.exports import ExportFormat, ExportSpec, ExportType

LINK_TYPE = "usagegraph/export"
LINK_TTL = timedelta(minutes=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidLink(Exception):
    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.expired = expired


@dataclass(frozen=True, slots=True)
class SignedLink:
    signature: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LinkClaims:
    spec: ExportSpec
    api_key_id: int | None


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def _from_micros(value: object) -> datetime:
    if not isinstance(value, int):
        raise TypeError("not a timestamp")
    return EPOCH + timedelta(microseconds=value)


def sign_export(
    secret: str, spec: ExportSpec, api_key_id: int | None, ttl: timedelta = LINK_TTL
) -> SignedLink:
    now = datetime.now(UTC)
    expires_at = now + ttl
    claims = {
        "typ": LINK_TYPE,
        "app": spec.application_id,
        "type": spec.type.value,
        "from": _micros(spec.start),
        "to": _micros(spec.end),
        "fmt": spec.format.value,
        "key": api_key_id,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    return SignedLink(jwt.encode(claims, secret, algorithm="HS256"), expires_at)


def verify_export(secret: str, signature: str) -> LinkClaims:
    """The export a signature names; InvalidLink when it is forged, altered or expired."""
    try:
        claims = jwt.decode(
            signature,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp", "typ", "app", "type", "from", "to", "fmt"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidLink("this export link has expired: ask for a new one", expired=True) from None
    except jwt.InvalidTokenError:
        raise InvalidLink("invalid export link signature") from None
    if claims["typ"] != LINK_TYPE:
        raise InvalidLink("invalid export link signature")
    try:
        spec = ExportSpec(
            application_id=int(claims["app"]),
            type=ExportType(claims["type"]),
            start=_from_micros(claims["from"]),
            end=_from_micros(claims["to"]),
            format=ExportFormat(claims["fmt"]),
        )
    except (TypeError, ValueError, OverflowError):
        raise InvalidLink("invalid export link signature") from None
    key = claims.get("key")
    return LinkClaims(spec=spec, api_key_id=int(key) if key is not None else None)


def same_export(signed: ExportSpec, asked: ExportSpec) -> bool:
    """Whether the URL's parameters are the ones that were signed (to the microsecond)."""
    return (
        signed.application_id == asked.application_id
        and signed.type == asked.type
        and signed.format == asked.format
        and _micros(signed.start) == _micros(asked.start)
        and _micros(signed.end) == _micros(asked.end)
    )
