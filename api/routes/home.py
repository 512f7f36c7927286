"""GET /: what this server is and where its API is."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

HOME = """<!doctype html>
<html lang="en">
  <head><meta charset="utf-8" /><title>usagegraph</title><link rel="icon" href="data:," /></head>
  <body>
    <h1>usagegraph</h1>
    <p>The GraphQL API is at <a href="graphql">/graphql</a>: open it in a browser for
    GraphiQL, or POST queries to it with <code>Authorization: Bearer &lt;API key&gt;</code>.
    Subscriptions use a WebSocket on the same URL (<code>graphql-transport-ws</code>).</p>
  </body>
</html>
"""


async def home(_: Request) -> HTMLResponse:
    return HTMLResponse(HOME)


def home_route() -> Route:
    return Route("/", home, methods=["GET"])
