"""GraphiQL is served from the package: the page a browser gets at /graphql loads only
assets of this server (no other host, no inline script), each answered with its media type
and recorded (version, licence, hash) in VERSIONS.json; GET / points to /graphql. Where a
Chromium is installed, the page is rendered offline (every other host unresolvable) under
its Content-Security-Policy."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from api.graphiql import CONTENT_SECURITY_POLICY

VENDOR = Path(__file__).resolve().parents[2] / "api" / "static" / "vendor"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css"}
BROWSER_SECONDS = 90


class _References(HTMLParser):
    """The URLs a page loads (src, href) and whether it has inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_script = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name):
                self.urls.append(found[name])  # type: ignore[arg-type]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


async def _page(server) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(server.graphql, headers={"accept": "text/html"})


async def test_the_page_loads_only_this_servers_assets(server) -> None:
    page = await _page(server)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert not re.search(r"(https?:)?//[a-z0-9]", page.text, re.IGNORECASE)  # no other host
    references = _References()
    references.feed(page.text)
    assert not references.inline_script
    assets = [url for url in references.urls if not url.startswith("data:")]
    assert len(assets) >= 7
    async with httpx.AsyncClient() as http:
        for url in assets:
            absolute = urljoin(server.graphql, url)
            assert urlsplit(absolute).netloc == urlsplit(server.url).netloc
            answer = await http.get(absolute)
            assert answer.status_code == 200, url
            suffix = Path(urlsplit(absolute).path).suffix
            assert answer.headers["content-type"].split(";")[0] == MEDIA_TYPES[suffix], url
            assert answer.content


def test_every_vendored_file_is_recorded_with_its_version_licence_and_hash() -> None:
    record = json.loads((VENDOR / "VERSIONS.json").read_text())
    served = {path.name for path in VENDOR.iterdir() if path.is_file()} - {"VERSIONS.json"}
    recorded: set[str] = set()
    for package, entry in record.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"]), package
        assert entry["license"] == "MIT", package
        assert "Permission is hereby granted" in (VENDOR / entry["licenseFile"]).read_text()
        for name, file in entry["files"].items():
            assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == file["sha256"]
            recorded.add(name)
    assert recorded == served
    assert "graphql-ws" in record["graphiql"]["bundles"]  # subscriptions need no other file


async def test_the_root_points_to_graphql(server) -> None:
    async with httpx.AsyncClient() as http:
        home = await http.get(server.url + "/")
        assert home.status_code == 200
        assert 'href="graphql"' in home.text
        followed = await http.get(
            urljoin(server.url + "/", "graphql"), headers={"accept": "text/html"}
        )
        assert followed.status_code == 200 and "GraphiQL" in followed.text


async def test_graphiql_renders_offline_in_a_browser(server) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium on PATH to render the page")
    process = await asyncio.create_subprocess_exec(
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--dump-dom",
        server.graphql,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    dom, _ = await asyncio.wait_for(process.communicate(), BROWSER_SECONDS)
    rendered = dom.decode()
    assert "graphiql-query-editor" in rendered, rendered[:2000]
    assert "CodeMirror" in rendered
    assert "Loading..." not in rendered
