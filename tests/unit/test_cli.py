"""The installed `ourvidz` command, run as a real process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from ourvidz.auth import decode_token
from ourvidz.config import Settings
from ourvidz.db import migrate
from ourvidz.db.session import make_engine
from ourvidz.prompts.templates import default_templates

COMMANDS = ["up", "demo", "api", "worker", "bootstrap", "token", "db"]
OURVIDZ = shutil.which("ourvidz", path=str(Path(sys.executable).parent)) or "ourvidz"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OURVIDZ, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert f" {command} " in result.stdout


@pytest.mark.parametrize("command", [*COMMANDS, "db upgrade", "db downgrade", "db current"])
def test_each_command_has_help(command: str) -> None:
    result = run(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: ourvidz" in result.stdout


@pytest.mark.parametrize("command", ["worker", "bootstrap", "api"])
def test_prefect_commands_need_an_api_url(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = subprocess.run([OURVIDZ, command], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1 and "PREFECT_API_URL is not set" in result.stderr


def test_db_upgrade_creates_the_schema(database_url: str) -> None:
    result = run("db", "upgrade", env={"OURVIDZ_DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    head = migrate.head_revision()
    assert f"database at revision {head}" in result.stdout
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert "jobs" in sa.inspect(conn).get_table_names()
        seeded = set(conn.scalars(sa.text("SELECT template_name FROM prompt_templates")))
    engine.dispose()
    assert seeded == {t.name for t in default_templates().all}
    again = run("db", "upgrade", env={"OURVIDZ_DATABASE_URL": database_url})
    assert "prompt templates added: none" in again.stdout  # an operator's edits are never replaced
    current = run("db", "current", env={"OURVIDZ_DATABASE_URL": database_url})
    assert f"current: {head}  head: {head}" in current.stdout
    back = run(
        "db", "downgrade", "--", "-1", env={"OURVIDZ_DATABASE_URL": database_url}
    )  # as the README says
    assert back.returncode == 0 and "database at revision" in back.stdout and head not in back.stdout, back
    down = run("db", "downgrade", "base", env={"OURVIDZ_DATABASE_URL": database_url})
    assert down.returncode == 0 and "database at revision None" in down.stdout


def test_db_upgrade_on_the_embedded_default_creates_the_sqlite_file() -> None:
    result = run("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert (Settings().data_dir / "ourvidz.db").is_file()


def test_token_is_signed_with_the_configured_secret() -> None:
    user_id = uuid.uuid4()
    admin = run("token", "--user", str(user_id), "--admin")
    assert admin.returncode == 0, admin.stderr
    settings = Settings()  # reads the secret the command generated
    assert settings.jwt_secret is not None
    principal = decode_token(settings.jwt_secret.get_secret_value(), "authenticated", admin.stdout.strip())
    assert principal.user_id == user_id and principal.is_admin
    plain = run("token", "--user", str(user_id))
    assert not decode_token(
        settings.jwt_secret.get_secret_value(), "authenticated", plain.stdout.strip()
    ).is_admin


def test_token_rejects_a_non_uuid_user() -> None:
    result = run("token", "--user", "alice")
    assert result.returncode == 1 and "--user must be a UUID" in result.stderr


def test_production_without_secrets_stops_with_a_clear_error() -> None:
    result = run("token", "--user", str(uuid.uuid4()), env={"OURVIDZ_ENVIRONMENT": "production"})
    assert result.returncode == 1
    assert "configuration error" in result.stderr and "OURVIDZ_JWT_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
