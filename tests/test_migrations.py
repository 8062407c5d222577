"""Migrations go up and down cleanly on SQLite and PostgreSQL and match the models exactly."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.auth import Role
from ourvidz.db import migrate
from ourvidz.db.models import Base, Job, Profile, UserRole
from ourvidz.db.session import make_engine

EXPECTED_TABLES = {
    "profiles", "user_roles", "projects", "jobs", "images", "videos", "system_config", "prompt_templates",
    "negative_prompts", "conversations", "messages", "usage_logs", "webhook_deliveries", "worker_health",
}  # fmt: skip


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_and_matches_models(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert _tables(database_url) == EXPECTED_TABLES
    assert migrate.current_revision(database_url) == migrate.head_revision()
    engine = make_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_every_revision_goes_down_and_up_again(database_url: str) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(database_url))
    revisions = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    assert revisions, "no migrations found"
    for revision in revisions:
        migrate.upgrade(database_url, revision)
        assert migrate.current_revision(database_url) == revision
        migrate.downgrade(database_url, "-1")
        migrate.upgrade(database_url, revision)
    migrate.downgrade(database_url, "base")
    assert migrate.current_revision(database_url) is None
    assert _tables(database_url) == set()
    migrate.upgrade(database_url)
    assert _tables(database_url) == EXPECTED_TABLES


def test_upgrade_twice_is_harmless(database_url: str) -> None:
    migrate.upgrade(database_url)
    migrate.upgrade(database_url)
    assert migrate.current_revision(database_url) == migrate.head_revision()


@pytest.mark.parametrize(
    ("table", "column", "bad_value"),
    [
        ("jobs", "status", "running"),
        ("jobs", "progress", 101),
        ("jobs", "attempts", -1),
        ("profiles", "content_tier_allowed", "anything"),
        ("user_roles", "role", "superuser"),
    ],
)
def test_database_rejects_values_outside_the_model(
    sessions: sessionmaker[Session], table: str, column: str, bad_value: object
) -> None:
    """The checks live in the schema, so even writers that bypass the models cannot store junk."""
    with sessions.begin() as session:
        user = Profile(roles=[UserRole(role=Role.GUEST)])
        session.add(user)
        session.flush()
        session.add(Job(user_id=user.id, job_type="sdxl_image_fast"))
    with pytest.raises(sa.exc.IntegrityError), sessions.begin() as session:
        session.execute(sa.text(f"UPDATE {table} SET {column} = :value"), {"value": bad_value})
