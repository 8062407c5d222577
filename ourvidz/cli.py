"""The `ourvidz` command: start the stack or one of its parts, manage the database, mint dev tokens."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from ourvidz.config import Settings, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="OurVidz generation backend on Prefect.")
db_app = typer.Typer(no_args_is_help=True, help="Manage the job database schema (Alembic migrations).")
app.add_typer(db_app, name="db")
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        messages = "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
        err.print(f"[red]configuration error:[/red] {messages}")
        raise typer.Exit(1) from None


def _not_yet(what: str, issue: int) -> NoReturn:
    err.print(f"[yellow]`ourvidz {what}` is not available yet[/yellow]: it arrives with issue #{issue}.")
    raise typer.Exit(2)


@app.command()
def up() -> None:
    """Run the whole stack on this machine: Prefect server, gateway, GPU worker, maintenance."""
    _not_yet("up", 4)


@app.command()
def demo() -> None:
    """Bring the stack up, run one SDXL image job and one video job, print their files."""
    _not_yet("demo", 4)


@app.command()
def api() -> None:
    """Serve the HTTP gateway (the spec's endpoints)."""
    _not_yet("api", 5)


@app.command()
def worker() -> None:
    """Start a GPU worker that runs generation flow runs in-process with warm models."""
    _not_yet("worker", 4)


@app.command()
def bootstrap() -> None:
    """Create work pools, queues, concurrency limits, automations and deployments (idempotent)."""
    _not_yet("bootstrap", 4)


@app.command()
def token(
    user: Annotated[str, typer.Option(help="Profile id (a UUID) to put in `sub`.")],
    admin: Annotated[bool, typer.Option(help="Grant the admin role.")] = False,
    ttl_minutes: Annotated[int, typer.Option(min=1, help="Lifetime of the token.")] = 60,
) -> None:
    """Print a development JWT signed with the configured secret."""
    from ourvidz.auth import Role, mint_token

    try:
        user_id = uuid.UUID(user)
    except ValueError:
        err.print(f"[red]--user must be a UUID[/red], got {user!r}")
        raise typer.Exit(1) from None
    settings = _settings()
    assert settings.jwt_secret is not None  # filled in by Settings
    roles = frozenset({Role.ADMIN}) if admin else frozenset()
    ttl = timedelta(minutes=ttl_minutes)
    typer.echo(mint_token(settings.jwt_secret.get_secret_value(), settings.jwt_audience, user_id, roles, ttl))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from ourvidz.db import migrate

    url = _settings().database_url
    migrate.upgrade(url, revision)
    typer.echo(f"database at revision {migrate.current_revision(url)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. `base` or `-1`.")],
) -> None:
    """Revert migrations down to REVISION."""
    from ourvidz.db import migrate

    url = _settings().database_url
    migrate.downgrade(url, revision)
    typer.echo(f"database at revision {migrate.current_revision(url)}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and the latest one."""
    from ourvidz.db import migrate

    url = _settings().database_url
    typer.echo(f"current: {migrate.current_revision(url)}  head: {migrate.head_revision()}")
