"""The Usage page at `/`: one static HTML document whose ES modules, styles and vendored
browser libraries (api/static/usage/) the package's static mount serves at /static/usage/
(api/graphiql.py's `static_files`); nothing is fetched from a CDN."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

USAGE_DIR = Path(__file__).resolve().parent.parent / "static" / "usage"

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


def usage_page_route() -> Route:
    return Route("/", usage_page, methods=["GET"])
