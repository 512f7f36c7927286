"""The Usage page at `/`: one static HTML document, its ES modules and the vendored browser
libraries (api/static/), served from the installed package; nothing is fetched from a CDN."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
USAGE_DIR = STATIC_DIR / "usage"
VENDOR_DIR = STATIC_DIR / "vendor"

# The page talks to its own origin only (GraphQL over HTTP and WebSocket, export links);
# scripts and styles come from the package alone.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)


async def usage_page(_: Request) -> Response:
    return FileResponse(
        USAGE_DIR / "index.html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",  # the URL fragment never leaves, but be sure
            "X-Content-Type-Options": "nosniff",
        },
    )


def usage_page_routes() -> list[BaseRoute]:
    return [
        Route("/", usage_page, methods=["GET"]),
        Mount("/static/usage", StaticFiles(directory=USAGE_DIR), name="usage"),
        Mount("/static/vendor", StaticFiles(directory=VENDOR_DIR), name="vendor"),
    ]
