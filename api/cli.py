"""The `usagegraph` command line (SPEC §3.2)."""

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
    """Recompute every balance from the ledger; exit 1 on any difference."""
    from models.verify import verify_ledger

    problems = _with_database(verify_ledger)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        typer.echo(f"{len(problems)} difference(s) between counters and ledger", err=True)
        raise typer.Exit(1)
    typer.echo("ledger verified: every counter equals its ledger sum")


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


def main() -> None:
    app()
