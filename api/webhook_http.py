"""The HTTP client webhooks are posted with: aiohttp, one session per deliverer, its
connections kept alive between deliveries (one per endpoint in flight, as many as the
deliverer's concurrency). No redirects are followed (one could lead anywhere, a private
address too), no cookies are kept, answers are not decompressed, and at most RESPONSE_BYTES
of one are read (beyond that its connection is closed): a delivery's answer matters by its
status only.

Unless private targets are allowed, the connector's resolver refuses a host any of whose
addresses is not public (models/webhook_signing.py) when it connects, not only when the URL
is checked: a name that resolves to a public address at the check and to a private one at
the connection (DNS rebinding) is refused too. (An IP literal is not resolved: the check
before each run covers it, and it cannot change.)"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from models.webhook_signing import PRIVATE_TARGET, is_public

RESPONSE_BYTES = 65_536
KEEPALIVE_SECONDS = 30.0


class PrivateAddress(OSError):
    """A host resolved, when connecting, to an address a webhook may not be sent to."""


class PublicResolver(AbstractResolver):
    """aiohttp's resolver, answering only hosts whose every address is public."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner if inner is not None else aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if not found or not all(is_public(entry["host"]) for entry in found):
            raise PrivateAddress(PRIVATE_TARGET)
        return found

    async def close(self) -> None:
        await self.inner.close()


def refusal(error: BaseException) -> str | None:
    """The message of a connection refused for a private address, else None."""
    cause = getattr(error, "os_error", None) or error.__cause__
    return str(cause) if isinstance(cause, PrivateAddress) else None


class WebhookClient:
    """Posts deliveries; its session is made in the running loop at the first post."""

    # what a post raises for the receiver's doing, and the message of a refused address
    failures = (OSError, aiohttp.ClientError)
    refusal = staticmethod(refusal)

    def __init__(self, connections: int, allow_private: bool) -> None:
        self.connections = connections
        self.allow_private = allow_private
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.connections,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE_SECONDS,
                resolver=None if self.allow_private else PublicResolver(),
            )
            self.session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                # the caller bounds each delivery's time (asyncio.timeout)
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self.session

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> int:
        """The status of the answer (raises OSError: aiohttp's connection errors are; the
        caller bounds the time)."""
        response: Any
        async with self._session().post(
            url, data=body, headers=headers, allow_redirects=False
        ) as response:
            read = 0
            while chunk := await response.content.read(RESPONSE_BYTES):
                read += len(chunk)
                if read > RESPONSE_BYTES:
                    response.close()  # the rest of a long answer is not read
                    break
            return int(response.status)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
