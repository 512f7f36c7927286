"""The `usagegraph` command line (docs/operations.md#command-line)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from api.database import apply_migrations, close_database, init_database
from api.settings import get_settings

T = TypeVar("T")

app = typer.Typer(help="usagegraph: a GraphQL backend for credit usage.", no_args_is_help=True)


def _with_database(work: Callable[[], Awaitable[T]]) -> T:
    async def run() -> T:
        await init_database(get_settings())
        try:
            return await work()
        finally:
            await close_database()

    return asyncio.run(run())


@app.command()
def migrate() -> None:
    """Apply every pending database migration."""

    async def run() -> None:
        try:
            await apply_migrations(get_settings())
        finally:
            await close_database()

    asyncio.run(run())
    typer.echo("migrations applied")


@app.command()
def verify() -> None:
    """Recompute every balance and billing rollup from the ledger; exit 1 on any difference."""
    from models.verify import verify_ledger

    problems = _with_database(verify_ledger)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        typer.echo(f"{len(problems)} difference(s) between counters and ledger", err=True)
        raise typer.Exit(1)
    typer.echo("ledger verified: every counter equals its ledger sum")


@app.command("rebuild-rollups")
def rebuild_rollups() -> None:
    """Sum every rollup afresh from the whole ledger (reports and billing read them): after
    history was written behind the fold, as a restore can leave it. One transaction; the
    service may keep running."""
    from models.rollups import rebuild_rollups as rebuild

    _with_database(rebuild)
    typer.echo("rollups summed afresh from the ledger")


@app.command("create-org")
def create_org(name: str) -> None:
    """Create an organization; the last line printed is its first API key (shown once)."""
    from models.accounts import create_organization
    from models.errors import DomainError

    try:
        organization, issued = _with_database(lambda: create_organization(name))
    except DomainError as exc:
        typer.echo(f"{exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"organization {organization.id} {organization.name!r} created")
    typer.echo("organization API key (ADMIN), shown once:")
    typer.echo(issued.secret)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Server processes (PostgreSQL and Redis only)."),
    demo: bool = typer.Option(False, "--demo", help="Seed a demo organization and print a key."),
    access_log: bool = typer.Option(
        True, "--access-log/--no-access-log", help="uvicorn's per-request log line."
    ),
) -> None:
    """Serve the Usage page at / and GraphQL (and GraphiQL) at /graphql."""
    import uvicorn

    from api.logging_setup import configure_logging, logging_config

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    if workers > 1 and not settings.is_postgres:
        typer.echo(
            "--workers > 1 needs DATABASE_URL=postgres://... (SQLite is one process)", err=True
        )
        raise typer.Exit(2)
    if not settings.is_postgres:
        migrate()
    if demo:
        from api.demo import seed_demo

        seeded = _with_database(lambda: seed_demo(settings))
        url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/graphql"
        typer.echo("")
        # The page moves the key from the fragment (never sent to the server) to the tab's
        # session and drops it from the address bar.
        typer.echo(f"Usage page:     {url.removesuffix('/graphql')}/#key={seeded.api_key}")
        typer.echo(f"GraphiQL:       {url}")
        typer.echo(f"application id: {seeded.application_id}")
        typer.echo(f"API key:        {seeded.api_key}")
        typer.echo('In GraphiQL, add the header {"Authorization": "Bearer <API key>"}.')
        typer.echo("")
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ws="websockets-sansio",
        ws_per_message_deflate=settings.ws_compression,
        ws_max_size=settings.max_body_bytes,  # one WebSocket message: the same bound as a body
        log_config=logging_config(settings.log_format, settings.log_level),
        log_level=settings.log_level.lower(),
        access_log=access_log,
    )


@app.command("export-schema")
def export_schema(
    output: str | None = typer.Option(None, "--output", "-o", help="Write to this file."),
) -> None:
    """Print the GraphQL SDL (or write it to --output)."""
    from resolvers.schema import schema_sdl

    sdl = schema_sdl()
    if output is None:
        typer.echo(sdl, nl=False)
    else:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(sdl)


def main() -> None:
    app()
