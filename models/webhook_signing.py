"""Webhook secrets, signatures and the addresses a webhook may be sent to (docs/webhooks.md).

Signatures follow Standard Webhooks: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
keyed by the base64 part of a `whsec_` secret, several space-separated while a rotated
secret still signs. A webhook goes only to http(s) URLs whose host resolves to public
addresses: private, loopback, link-local and reserved ones are refused unless the operator
allows them (tests, on-premise receivers), at creation, again before every run of
deliveries, and at every connection (api/webhook_http.py), as DNS answers change."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from models.errors import ValidationFailed

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
MAX_URL = 1_000  # as every string argument (resolvers/input_rules.py)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature_header(
    signing_secrets: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """The `webhook-signature` value: one `v1,` signature per secret that signs."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()).decode()
        for s in signing_secrets
    )


class UnsafeTarget(ValidationFailed):
    """A URL a webhook may not be sent to (its message says why)."""


def check_url_form(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL, else UnsafeTarget."""
    if len(url) > MAX_URL:
        raise UnsafeTarget(f"url must be at most {MAX_URL} characters", field="url")
    if not url.isascii() or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeTarget(
            "url must be ASCII without spaces or control characters (percent-encode them)",
            field="url",
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTarget("url must be an http or https URL with a host", field="url")
    if parts.username or parts.password:
        raise UnsafeTarget("url must not carry credentials", field="url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeTarget("url has an invalid port", field="url") from None
    return parts.hostname, port


PRIVATE_TARGET = "url resolves to a private, loopback, link-local or reserved address"


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_target(url: str, allow_private: bool) -> None:
    """Refuses (UnsafeTarget) a URL that is not http(s), or whose host resolves to any
    address that is not public, unless `allow_private`."""
    host, port = check_url_form(url)
    if allow_private:
        return
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UnsafeTarget("url's host does not resolve", field="url") from None
    addresses = {info[4][0] for info in found}
    if not addresses or not all(is_public(address) for address in addresses):
        raise UnsafeTarget(PRIVATE_TARGET, field="url")
