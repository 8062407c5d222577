"""Migrations go up and down cleanly on SQLite and PostgreSQL and match the models exactly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.auth import Role
from ourvidz.db import migrate
from ourvidz.db.models import Base, Job, Profile, SystemConfig, UserRole, Worker
from ourvidz.db.session import make_engine

EXPECTED_TABLES = {
    "profiles", "user_roles", "projects", "jobs", "images", "videos", "system_config", "prompt_templates",
    "negative_prompts", "conversations", "messages", "usage_logs", "webhook_deliveries", "worker_health",
    "workers", "worker_leases", "content_refusals",
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


JOBS_0003 = sa.table(
    "jobs", sa.column("id", sa.Uuid()), sa.column("user_id", sa.Uuid()), sa.column("job_type", sa.String()),
    sa.column("status", sa.String()), sa.column("progress", sa.Integer()),
    sa.column("error_message", sa.Text()), sa.column("attempts", sa.Integer()),
    sa.column("max_attempts", sa.Integer()),
    sa.column("metadata", sa.JSON()), sa.column("created_at", sa.DateTime(timezone=True)),
)  # fmt: skip
SETTINGS_TABLE = sa.table(
    "system_config", sa.column("key", sa.String()), sa.column("value", sa.JSON()),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)  # fmt: skip


def test_0004_moves_error_codes_and_registrations_out_of_strings_and_json(database_url: str) -> None:
    """Failed jobs' `CODE: message` become a code and a message; `worker:*` settings become rows; and
    back again on the way down."""
    migrate.upgrade(database_url, "0003")
    engine = make_engine(database_url)
    messages = {
        "coded": "CONTENT_PROHIBITED: content refused", "raised": "RuntimeError: it broke",
        "worded": "the worker lost its GPU", "running": None,
    }  # fmt: skip
    jobs = {name: uuid.uuid4() for name in messages}
    checked = datetime(2026, 11, 30, 12, tzinfo=UTC)
    registrations = {
        "worker:chat": {
            "url": "http://chat:8000", "protocol": "ourvidz", "capabilities": ["chat"],
            "maxConcurrentChats": 4,
            "registrationInfo": {"registrationMethod": "register-chat-worker"},
            "health": {"status": "unhealthy", "responseTime": 0.25, "error": "HTTP 503",
                       "checkedAt": checked.isoformat(), "unhealthySince": checked.isoformat()},
        },
        "worker:gpu:box-1": {
            "url": "http://box-1:9100", "pool": "gpu", "queues": ["sdxl"],
            "registrationInfo": {"registrationMethod": "worker-start"},
        },
    }  # fmt: skip
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        user = Profile()
        session.add(user)
        session.flush()
        for name, job_id in jobs.items():
            status = "processing" if name == "running" else "failed"
            session.execute(sa.insert(JOBS_0003).values(
                id=job_id, user_id=user.id, job_type="image_fast", status=status, progress=0,
                error_message=messages[name], attempts=0, max_attempts=3, metadata={}, created_at=now,
            ))  # fmt: skip
        for key, value in registrations.items():
            session.execute(sa.insert(SETTINGS_TABLE).values(key=key, value=value, updated_at=now))
    migrate.upgrade(database_url)
    with Session(engine) as session:
        rows = {name: session.get_one(Job, job_id) for name, job_id in jobs.items()}
        assert {name: (row.error_code, row.error_message) for name, row in rows.items()} == {
            "coded": ("CONTENT_PROHIBITED", "content refused"),
            "raised": ("GENERATION_FAILED", "RuntimeError: it broke"),
            "worded": ("GENERATION_FAILED", "the worker lost its GPU"),
            "running": (None, None),
        }
        workers = {(w.kind, w.name): w for w in session.scalars(sa.select(Worker))}
        assert session.scalars(sa.select(SystemConfig.key)).all() == []
    chat, box = workers["chat", ""], workers["prefect-worker", "gpu:box-1"]
    assert (chat.url, chat.protocol, chat.capabilities, chat.max_concurrent) == (
        "http://chat:8000", "ourvidz", ["chat"], 4,
    )  # fmt: skip
    assert (chat.probe_status, chat.probe_response_ms, chat.probe_error) == ("unhealthy", 250.0, "HTTP 503")
    assert (chat.probed_at, chat.unhealthy_since) == (checked, checked)
    assert (box.url, box.pool, box.queues, box.registration_method) == (
        "http://box-1:9100", "gpu", ["sdxl"], "worker-start",
    )  # fmt: skip
    migrate.downgrade(database_url, "0003")
    with engine.connect() as conn:
        restored = {row.id: row.error_message for row in conn.execute(sa.select(JOBS_0003))}
        settings = {row.key: row.value for row in conn.execute(sa.select(SETTINGS_TABLE))}
    engine.dispose()
    assert {name: restored[job_id] for name, job_id in jobs.items()} == messages
    assert settings["worker:chat"]["health"]["status"] == "unhealthy"
    assert settings["worker:gpu:box-1"]["url"] == "http://box-1:9100" and set(settings) == set(registrations)
