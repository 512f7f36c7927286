"""Operations endpoints: `/healthz` (the process answers), `/readyz` (the database and the
broker answer: 503 otherwise, so a balancer stops sending traffic) and `/metrics`
(Prometheus text)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.metrics import CONTENT_TYPE, Metrics
from models.sql import single_statement

PROBE_TIMEOUT = 2.0


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _database() -> None:
    await single_statement(lambda db: db.value("SELECT 1"))


async def _broker(broker: Any) -> None:
    client = getattr(broker, "client", None)  # the Redis broker; in-process needs nothing
    if client is not None:
        await client.ping()


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, PROBE_TIMEOUT)
    except Exception as error:  # any failure means not ready; the reason goes in the body
        return name, f"unavailable: {type(error).__name__}"
    return name, "ok"


async def readyz(request: Request) -> Response:
    realtime = request.app.state.realtime
    checks = dict(
        await asyncio.gather(
            _check("database", _database()), _check("broker", _broker(realtime.broker))
        )
    )
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


def metrics_route(metrics: Metrics) -> Route:
    async def render(_: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE)

    return Route("/metrics", render, methods=["GET"])


def health_routes(metrics: Metrics) -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        metrics_route(metrics),
    ]
