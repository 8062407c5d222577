"""The `ourvidz` command: start the stack or one of its parts, manage the database, mint dev tokens."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from datetime import timedelta
from typing import Annotated

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


@app.command()
def up() -> None:
    """Run the stack on this machine: Prefect server (unless PREFECT_API_URL is set), gateway (with the
    dispatcher), GPU worker, maintenance worker; a part that dies is restarted."""
    from ourvidz.stack import StackError, start_local_stack

    settings = _settings()
    _stop_on_sigterm()
    try:
        local = start_local_stack(settings)
    except StackError as exc:
        err.print(f"[red]the stack did not start:[/red] {exc}")
        raise typer.Exit(1) from None
    out = Console()
    out.print(f"Prefect UI:  {local.ui_url}")
    out.print(f"Prefect API: {local.api_url}")
    out.print(f"Gateway:     {local.gateway_url}  (OpenAPI: {local.gateway_url}/docs)")
    out.print(f"GPU worker:  {local.worker_health_url}")
    out.print(f"Logs:        {settings.data_dir / 'logs'}")
    out.print("Press Ctrl-C to stop.")
    try:
        while True:
            time.sleep(1)
            for (
                line
            ) in local.stack.supervise():  # a child that died is restarted, one that keeps failing stops all
                err.print(f"[yellow]{line}[/yellow]")
    except StackError as exc:
        err.print(f"[red]stopping:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        out.print("Stopping...")
    finally:
        local.stack.stop()


@app.command()
def demo() -> None:
    """Bring the stack up, run one SDXL image job and one video job, print their files and runs."""
    from deployments.demo import run_demo
    from ourvidz.stack import StackError

    settings = _settings()
    _stop_on_sigterm()
    try:
        ok = run_demo(settings, Console(soft_wrap=True))
    except StackError as exc:
        err.print(f"[red]the demo failed:[/red] {exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(0 if ok else 1)


def _stop_on_sigterm() -> None:
    """SIGTERM stops the stack like Ctrl-C does, so no child process is left behind."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Interface (default: OURVIDZ_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: OURVIDZ_API_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Gateway processes.")] = 1,
) -> None:
    """Serve the HTTP gateway (the spec's endpoints); needs PREFECT_API_URL."""
    import uvicorn

    from ourvidz.api.logs import log_config

    # the app's settings (read by create_app, in every worker process) know where it listens: the egress
    # policy refuses calls to the gateway's own address
    for name, value in (("OURVIDZ_API_HOST", host), ("OURVIDZ_API_PORT", port)):
        if value is not None:
            os.environ[name] = str(value)
    get_settings.cache_clear()
    settings = _settings()
    _require_prefect_api()
    uvicorn.run(
        "ourvidz.api.app:create_app",
        factory=True,
        log_config=log_config(),  # access lines without the WebSocket's ?access_token=<jwt>
        host=settings.api_host,
        port=settings.api_port,
        workers=workers,
        log_level="info",
        # bounded: a dispatch still in flight when it stops is redone by the next dispatcher (same key)
        timeout_graceful_shutdown=10,
    )


@app.command()
def dispatcher() -> None:
    """Create the flow runs of queued jobs (what every gateway also does, unless
    OURVIDZ_GATEWAY_DISPATCHES=false)."""
    settings = _settings()
    _require_prefect_api()
    import logging

    from ourvidz.db.session import sessions_for
    from ourvidz.jobs.dispatch import run_dispatcher
    from ourvidz.orchestration.runs import FlowRuns

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _stop_on_sigterm()

    async def serve() -> None:
        async with FlowRuns() as runs:
            await run_dispatcher(sessions_for(settings.database_url), runs, settings.database_url)

    # a dispatch cut short by Ctrl-C or SIGTERM is redone by the next dispatcher: same key, same run
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@app.command()
def worker(
    pool: Annotated[str | None, typer.Option(help="Work pool to poll (default: OURVIDZ_WORK_POOL).")] = None,
    queue: Annotated[list[str] | None, typer.Option(help="Work queue to poll; repeat for several.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Most flow runs at once on this worker.")] = None,
    name: Annotated[str | None, typer.Option(help="Worker name shown in the Prefect UI.")] = None,
    health_port: Annotated[int | None, typer.Option(help="Serve GET /health on this port.")] = None,
    warm_up: Annotated[bool, typer.Option(help="Load the queues' models at start.")] = True,
) -> None:
    """Start a GPU worker that runs generation flow runs in-process with warm models."""
    settings = _settings()
    _require_prefect_api()
    from prefect.utilities.processutils import setup_signal_handlers_worker

    from ourvidz.worker.worker import OurvidzWorker

    # as `prefect worker start` does: SIGTERM stops like Ctrl-C (runs handed back, lease and
    # registration given up), a second one kills
    setup_signal_handlers_worker(os.getpid(), "the ourvidz-gpu worker", err.print)

    gpu_worker = OurvidzWorker(
        work_pool_name=pool or settings.work_pool, work_queues=queue or ["sdxl", "wan"], limit=limit,
        name=name, health_port=health_port, warm_up=warm_up,
    )  # fmt: skip
    try:
        asyncio.run(gpu_worker.start())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the worker has torn down on the way out
        typer.echo(f"worker {gpu_worker.name} stopped")


@app.command()
def bootstrap(
    pools: Annotated[
        bool, typer.Option("--pools", help="Only the work pools and queues (before `prefect deploy --all`).")
    ] = False,
) -> None:
    """Create the work pools, queues with their limits, deployments and automations (idempotent)."""
    settings = _settings()
    _require_prefect_api()
    from deployments.bootstrap import BootstrapError
    from deployments.bootstrap import bootstrap as run_bootstrap

    try:
        report = asyncio.run(run_bootstrap(settings, pools_only=pools))
    except BootstrapError as exc:
        err.print(f"[red]bootstrap refused:[/red] {exc}")
        raise typer.Exit(1) from None
    for thing, action in report.actions.items():
        typer.echo(f"{action:>9}  {thing}")


def _require_prefect_api() -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        err.print("[red]PREFECT_API_URL is not set[/red]: point it at a Prefect server, or run `ourvidz up`.")
        raise typer.Exit(1)


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
    """Apply migrations up to REVISION (default: the latest), then add missing shipped prompt templates."""
    from ourvidz.db import migrate
    from ourvidz.db.session import sessions_for
    from ourvidz.prompts.templates import seed_defaults

    url = _settings().database_url
    migrate.upgrade(url, revision)
    typer.echo(f"database at revision {migrate.current_revision(url)}")
    if revision == "head":
        added = seed_defaults(sessions_for(url))
        typer.echo(f"prompt templates added: {', '.join(added) or 'none'}")


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
