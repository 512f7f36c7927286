"""The HTTP/1.1 client webhooks are posted with: one kept-alive connection per endpoint,
responses parsed by httptools (uvicorn's parser). A delivery is one small POST whose answer
only its status matters for, at up to thousands a second from one process: httpx spent
several times the CPU of the rest of a delivery on it. No redirects are followed (one could
lead anywhere, a private address too); at most RESPONSE_BYTES of an answer are read, beyond
that the connection is closed."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

import httptools

RESPONSE_BYTES = 65_536
_TLS = ssl.create_default_context()


class _Answer(asyncio.Protocol):
    """A connection's reading side: the status of the answer to the request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[int] | None = None
        self.read = 0
        self.closed = False

    def expect(self) -> asyncio.Future[int]:
        self.parser = httptools.HttpResponseParser(self)
        self.read = 0
        self.answer = asyncio.get_running_loop().create_future()
        return self.answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.read += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"malformed answer ({error})"))
            self.close()
            return
        if self.read > RESPONSE_BYTES and self.answer is not None and not self.answer.done():
            status = self.parser.get_status_code()
            if status:
                self.answer.set_result(status)
            self.close()  # the rest of a long answer is not read

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("the connection closed before an answer"))

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(self.parser.get_status_code())
        if not self.parser.should_keep_alive():
            self.close()

    def _fail(self, error: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Target:
    """Where a URL's POSTs go: the address to connect to and the request line and Host."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if self.port == default else f"{host}:{self.port}"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class Connection:
    """One endpoint's connection, opened when needed and kept alive between POSTs."""

    def __init__(self) -> None:
        self.protocol: _Answer | None = None
        self.key: tuple[bool, str, int] | None = None

    async def post(self, target: Target, headers: dict[str, str], body: bytes) -> int:
        """The status of the answer (raises OSError, ConnectionError; the caller bounds
        the time)."""
        key = (target.tls, target.host, target.port)
        if self.protocol is None or self.protocol.closed or self.key != key:
            self.close()
            _, self.protocol = await asyncio.get_running_loop().create_connection(
                _Answer,
                target.host,
                target.port,
                ssl=_TLS if target.tls else None,
                server_hostname=target.host if target.tls else None,
            )
            self.key = key
        protocol = self.protocol
        lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        answer = protocol.expect()
        assert protocol.transport is not None
        protocol.transport.write(head + body)
        try:
            return await answer
        except BaseException:
            self.close()  # a late answer must not be read as the next request's
            raise

    def close(self) -> None:
        if self.protocol is not None:
            with contextlib.suppress(Exception):
                self.protocol.close()
        self.protocol = None
