"""jobs.error_code and the workers table: structured data out of strings and JSON

A failed job's code was written into its message (`CONTENT_PROHIBITED: ...`) and parsed back by
metrics; it now has a column of its own, filled here from the existing messages (the code prefix is
taken off the message). Registered workers and their last probe lived as JSON in `system_config`
(`worker:<kind>` and `worker:<pool>:<name>`); they move into `workers`, one row each.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
CODE_PREFIX = re.compile(r"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]{2,}): (.*)", re.DOTALL)
# codes whose message is kept whole (an exception's type and text, a worker's own words): no prefix
UNPREFIXED = ("GENERATION_FAILED", "TIMEOUT", "OUT_OF_MEMORY", "WORKER_FAILED")
STATUS_ENDPOINT = "prefect-worker"
BATCH = 1000

jobs = sa.table(
    "jobs", sa.column("id", sa.Uuid()), sa.column("status", sa.String()),
    sa.column("error_message", sa.Text()), sa.column("error_code", sa.String()),
)  # fmt: skip
system_config = sa.table(
    "system_config", sa.column("key", sa.String()), sa.column("value", JSON),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)  # fmt: skip


def upgrade() -> None:
    op.add_column("jobs", sa.Column("error_code", sa.String(length=64), nullable=True))
    _fill_error_codes()
    workers = op.create_table(
        "workers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("protocol", sa.String(length=16), nullable=True),
        sa.Column("capabilities", JSON, nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=True),
        sa.Column("pool", sa.String(length=64), nullable=True),
        sa.Column("queues", JSON, nullable=False),
        sa.Column("registration_method", sa.String(length=32), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("probe_status", sa.String(length=16), nullable=True),
        sa.Column("probe_response_ms", sa.Float(), nullable=True),
        sa.Column("probe_error", sa.Text(), nullable=True),
        sa.Column("probed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unhealthy_since", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
        sa.UniqueConstraint("kind", "name", name="uq_workers_kind_name"),
    )
    _move_registrations(workers)


def downgrade() -> None:
    _restore_registrations()
    op.drop_table("workers")
    _restore_error_prefixes()
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("error_code")


def _fill_error_codes() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(jobs.c.id, jobs.c.error_message).where(
            jobs.c.status == "failed", jobs.c.error_message.is_not(None)
        )
    ).all()
    updates = []
    for job_id, message in rows:
        match = CODE_PREFIX.match(message)
        if match:
            code, text = match.group(1), match.group(2)
        else:
            code, text = _kind_of(message), message
        updates.append({"job_id": job_id, "code": code, "message": text})
    statement = (
        sa.update(jobs)
        .where(jobs.c.id == sa.bindparam("job_id"))
        .values(error_code=sa.bindparam("code"), error_message=sa.bindparam("message"))
    )
    for start in range(0, len(updates), BATCH):
        conn.execute(statement, updates[start : start + BATCH])


def _kind_of(message: str) -> str:
    """The code of a message that carries none: an exception type the flow wrote, or a worker's text."""
    head = message.split(":", 1)[0].lower()
    if "timeout" in head or "timedout" in head:
        return "TIMEOUT"
    if "outofmemory" in head:
        return "OUT_OF_MEMORY"
    return "GENERATION_FAILED"


def _restore_error_prefixes() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(jobs.c.id, jobs.c.error_code, jobs.c.error_message).where(jobs.c.error_code.is_not(None))
    ).all()
    updates = [
        {"job_id": job_id, "message": f"{code}: {message or ''}"}
        for job_id, code, message in rows
        if code not in UNPREFIXED and not (message or "").startswith(f"{code}: ")
    ]
    statement = (
        sa.update(jobs)
        .where(jobs.c.id == sa.bindparam("job_id"))
        .values(error_message=sa.bindparam("message"))
    )
    for start in range(0, len(updates), BATCH):
        conn.execute(statement, updates[start : start + BATCH])


def _move_registrations(workers: sa.Table) -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(system_config.c.key, system_config.c.value).where(system_config.c.key.like("worker:%"))
    ).all()
    now = datetime.now(UTC)
    for key, value in rows:
        parts = key.split(":", 2)
        if len(parts) == 3:  # worker:<pool>:<name>, a Prefect worker's status endpoint
            kind, name = STATUS_ENDPOINT, f"{parts[1]}:{parts[2]}"
        else:
            kind, name = parts[1][:16], ""
        info = value.get("registrationInfo") or {}
        health = value.get("health") or {}
        conn.execute(
            workers.insert().values(
                id=uuid.uuid4(), kind=kind, name=name, url=str(value.get("url") or ""),
                protocol=value.get("protocol"), capabilities=list(value.get("capabilities") or []),
                max_concurrent=value.get("maxConcurrentChats"), pool=value.get("pool"),
                queues=list(value.get("queues") or []),
                registration_method=str(info.get("registrationMethod") or "manual")[:32],
                registered_at=_time(info.get("lastUpdated")) or now,
                updated_at=_time(info.get("lastRegistrationAttempt")) or now,
                probe_status=health.get("status"), probe_response_ms=_ms(health.get("responseTime")),
                probe_error=health.get("error"), probed_at=_time(health.get("checkedAt")),
                unhealthy_since=_time(health.get("unhealthySince")),
            )
        )  # fmt: skip
    conn.execute(system_config.delete().where(system_config.c.key.like("worker:%")))


def _restore_registrations() -> None:
    conn = op.get_bind()
    workers = sa.table(
        "workers", *(sa.column(name) for name in (
            "kind", "name", "url", "protocol", "capabilities", "max_concurrent", "pool", "queues",
            "registration_method", "registered_at", "updated_at", "probe_status", "probe_response_ms",
            "probe_error", "probed_at", "unhealthy_since",
        )),
    )  # fmt: skip
    for row in conn.execute(sa.select(workers)).mappings().all():
        key = f"worker:{row['name']}" if row["kind"] == STATUS_ENDPOINT else f"worker:{row['kind']}"
        method = row["registration_method"]
        value: dict[str, Any] = {
            "url": row["url"],
            "registrationInfo": {
                "autoRegistered": method == "register-chat-worker", "registrationMethod": method,
                "detectionMethod": "self-registration" if method == "register-chat-worker" else "manual",
                "lastUpdated": _iso(row["registered_at"]), "lastRegistrationAttempt": _iso(row["updated_at"]),
            },
        }  # fmt: skip
        if row["kind"] == "chat":
            value |= {"capabilities": row["capabilities"], "maxConcurrentChats": row["max_concurrent"] or 1,
                      "protocol": row["protocol"] or "openai"}  # fmt: skip
        if row["pool"]:
            value |= {"pool": row["pool"], "queues": row["queues"]}
        if row["probe_status"]:
            value["health"] = {
                "status": row["probe_status"], "error": row["probe_error"],
                "responseTime": (row["probe_response_ms"] or 0) / 1000, "checkedAt": _iso(row["probed_at"]),
            }  # fmt: skip
            if row["unhealthy_since"]:
                value["health"]["unhealthySince"] = _iso(row["unhealthy_since"])
        conn.execute(system_config.insert().values(key=key, value=value, updated_at=datetime.now(UTC)))


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands back text
        value = datetime.fromisoformat(value)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _ms(seconds: Any) -> float | None:
    return None if seconds is None else round(float(seconds) * 1000, 1)
