"""GraphiQL served from the package: the page (api/static/ide/) and the assets it loads,
vendored in api/static/vendor/ (versions and licences in its VERSIONS.json and LICENSES/,
refreshed by scripts/refresh_graphiql.py). Nothing comes from a CDN: the page works offline,
behind a proxy and under the strict Content-Security-Policy it is served with."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import HTMLResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

STATIC_PATH = "/static"
PAGE = (Path(__file__).parent / "static" / "ide" / "graphiql.html").read_text(encoding="utf-8")
# GraphiQL sets inline styles (style attributes); its scripts are all files of this origin.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self' ws: wss:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)


def graphiql_page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


def static_files() -> Mount:
    """The page's assets at /static (from the installed package's api/static)."""
    return Mount(STATIC_PATH, app=StaticFiles(packages=[("api", "static")]), name="static")
