"""The job database: typed SQLAlchemy 2 models, identical on SQLite and PostgreSQL.

The database is the source of truth for jobs; Prefect holds orchestration state and a job links to its
flow run by id. Enumerations are stored as checked strings so both databases enforce them the same way.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ourvidz.auth import Role
from ourvidz.db.types import JSONType, UTCDateTime, utcnow
from ourvidz.job_status import JobStatus
from ourvidz.policy import ContentTier

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _enum(cls: type[StrEnum], name: str) -> Enum:
    return Enum(
        cls, name=name, native_enum=False, create_constraint=True, length=32,
        values_callable=lambda members: [member.value for member in members],
    )  # fmt: skip


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


def _pk() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, default=uuid.uuid4)


def _created(*, index: bool = False) -> Mapped[datetime]:
    """Creation time; indexed where metrics, reports or the webhook retries select recent rows."""
    return mapped_column(default=utcnow, index=index)


def _updated() -> Mapped[datetime]:
    return mapped_column(default=utcnow, onupdate=utcnow)


def _user_fk() -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"), index=True)


class Profile(Base):
    """A user. `content_tier_allowed` is the highest tier they may use, and only once age-verified."""

    __tablename__ = "profiles"

    id: Mapped[uuid.UUID] = _pk()
    username: Mapped[str | None] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    content_tier_allowed: Mapped[ContentTier] = mapped_column(
        _enum(ContentTier, "content_tier"), default=ContentTier.ARTISTIC
    )
    age_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    roles: Mapped[list[UserRole]] = relationship(back_populates="user", cascade="all, delete-orphan")


class UserRole(Base):
    __tablename__ = "user_roles"
    __table_args__ = (UniqueConstraint("user_id", "role", name="uq_user_roles_user_id_role"),)

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    role: Mapped[Role] = mapped_column(_enum(Role, "user_role"))
    created_at: Mapped[datetime] = _created()

    user: Mapped[Profile] = relationship(back_populates="roles")


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    title: Mapped[str | None] = mapped_column(String(200))
    original_prompt: Mapped[str | None] = mapped_column(Text)
    enhanced_prompt: Mapped[str | None] = mapped_column(Text)
    media_type: Mapped[str] = mapped_column(String(16), default="image")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Job(Base):
    """The spec's JobRecord: one generation request and its life cycle."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_jobs_user_id_idempotency_key"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        CheckConstraint("progress >= 0 AND progress <= 100", name="progress_range"),
        Index("ix_jobs_user_id_created_at", "user_id", "created_at"),
        Index("ix_jobs_status_queue", "status", "queue"),
    )

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    job_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.QUEUED)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    # why a job failed, as a stable code (CONTENT_PROHIBITED, WORKER_LOST, ...); the message says the rest
    error_code: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    # `metadata` is reserved on declarative classes; the column keeps the spec's name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = _created(index=True)
    started_at: Mapped[datetime | None]
    # last progress of the current attempt: recover-jobs takes a job silent too long as hung
    progressed_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None] = mapped_column(index=True)
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    image_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL", use_alter=True)
    )
    video_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("videos.id", ondelete="SET NULL", use_alter=True)
    )
    format: Mapped[str | None] = mapped_column(String(16))
    quality: Mapped[str | None] = mapped_column(String(16))
    model_type: Mapped[str | None] = mapped_column(String(64))
    original_prompt: Mapped[str | None] = mapped_column(Text)
    enhanced_prompt: Mapped[str | None] = mapped_column(Text)
    enhancement_strategy: Mapped[str | None] = mapped_column(String(64))
    template_name: Mapped[str | None] = mapped_column(String(128))
    queue: Mapped[str | None] = mapped_column(String(32))
    flow_run_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    # a worker outside Prefect that reported the job processing (job-callback) owns it while its lease,
    # renewed by each of its reports, lasts; recovery re-queues a job whose runner went silent
    runner: Mapped[str | None] = mapped_column(String(200))
    runner_expires_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    webhook_url: Mapped[str | None] = mapped_column(String(2048))


class Image(Base):
    """One generated image file (a job with 3 or 6 SDXL images has 3 or 6 rows, by `image_index`)."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("job_id", "image_index", name="uq_images_job_id_image_index"),)

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    image_index: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    prompt: Mapped[str | None] = mapped_column(Text)
    enhanced_prompt: Mapped[str | None] = mapped_column(Text)
    bucket: Mapped[str | None] = mapped_column(String(64))
    storage_key: Mapped[str | None] = mapped_column(String(512))
    width: Mapped[int | None]
    height: Mapped[int | None]
    seed: Mapped[int | None] = mapped_column(BigInteger)
    format: Mapped[str | None] = mapped_column(String(16))
    quality: Mapped[str | None] = mapped_column(String(16))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Video(Base):
    __tablename__ = "videos"

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    prompt: Mapped[str | None] = mapped_column(Text)
    enhanced_prompt: Mapped[str | None] = mapped_column(Text)
    bucket: Mapped[str | None] = mapped_column(String(64))
    storage_key: Mapped[str | None] = mapped_column(String(512))
    thumbnail_key: Mapped[str | None] = mapped_column(String(512))
    width: Mapped[int | None]
    height: Mapped[int | None]
    frames: Mapped[int | None]
    fps: Mapped[int | None]
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    format: Mapped[str | None] = mapped_column(String(16))
    quality: Mapped[str | None] = mapped_column(String(16))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    error_message: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class SystemConfig(Base):
    """Operator-editable settings by key (the prompt cache's version, among others)."""

    __tablename__ = "system_config"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = _updated()


class PromptTemplate(Base):
    """A system prompt for enhancement or chat, per model family, quality and content tier."""

    __tablename__ = "prompt_templates"

    id: Mapped[uuid.UUID] = _pk()
    template_name: Mapped[str] = mapped_column(String(128), unique=True)
    use_case: Mapped[str] = mapped_column(String(32), default="enhancement")
    model_family: Mapped[str] = mapped_column(String(16))
    quality: Mapped[str | None] = mapped_column(String(16))
    content_tier: Mapped[ContentTier] = mapped_column(
        _enum(ContentTier, "content_tier"), default=ContentTier.ARTISTIC
    )
    system_prompt: Mapped[str] = mapped_column(Text)
    token_limit: Mapped[int | None]
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class NegativePrompt(Base):
    __tablename__ = "negative_prompts"

    id: Mapped[uuid.UUID] = _pk()
    model_family: Mapped[str] = mapped_column(String(16))
    content_tier: Mapped[ContentTier] = mapped_column(
        _enum(ContentTier, "content_tier"), default=ContentTier.ARTISTIC
    )
    negative_prompt: Mapped[str] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    title: Mapped[str | None] = mapped_column(String(200))
    content_tier: Mapped[ContentTier] = mapped_column(
        _enum(ContentTier, "content_tier"), default=ContentTier.ARTISTIC
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", cascade="all, delete-orphan", order_by="Message.created_at"
    )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (CheckConstraint("sender IN ('user', 'assistant', 'system')", name="sender"),)

    id: Mapped[uuid.UUID] = _pk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    sender: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = _created()

    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class UsageLog(Base):
    """Credits consumed: one row per charged job."""

    __tablename__ = "usage_logs"

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    action: Mapped[str] = mapped_column(String(64))
    format: Mapped[str | None] = mapped_column(String(16))
    quality: Mapped[str | None] = mapped_column(String(16))
    credits_consumed: Mapped[float] = mapped_column(Float, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = _created(index=True)


class WebhookDelivery(Base):
    """One delivery attempt of an outgoing webhook; `webhook_id` is the same across retries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "attempt", name="uq_webhook_deliveries_webhook_id_attempt"),
    )

    id: Mapped[uuid.UUID] = _pk()
    webhook_id: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status_code: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    succeeded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created(index=True)


class Worker(Base):
    """A registered HTTP worker and its latest probe: the chat worker, the seed system's GPU worker URLs
    (`sdxl`, `wan`, `video`) and the status endpoints of Prefect workers (`prefect-worker`, named
    `<pool>:<worker name>`). One row per (kind, name); kinds with one worker have the name ''."""

    __tablename__ = "workers"
    __table_args__ = (UniqueConstraint("kind", "name", name="uq_workers_kind_name"),)

    id: Mapped[uuid.UUID] = _pk()
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    url: Mapped[str] = mapped_column(String(2048))
    protocol: Mapped[str | None] = mapped_column(String(16))  # the chat worker's wire shape
    capabilities: Mapped[list[Any]] = mapped_column(default=list)
    max_concurrent: Mapped[int | None]
    pool: Mapped[str | None] = mapped_column(String(64))  # a Prefect worker's work pool and queues
    queues: Mapped[list[Any]] = mapped_column(default=list)
    registration_method: Mapped[str] = mapped_column(String(32))
    registered_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    probe_status: Mapped[str | None] = mapped_column(String(16))  # healthy | unhealthy; None: never probed
    probe_response_ms: Mapped[float | None] = mapped_column(Float)
    probe_error: Mapped[str | None] = mapped_column(Text)
    probed_at: Mapped[datetime | None]
    unhealthy_since: Mapped[datetime | None]  # start of the current run of failed probes


class WorkerLease(Base):
    """A GPU worker process's liveness: renewed every few seconds with the flow runs it holds; one that
    expires names the runs of a dead process (recovery crashes them and re-queues their jobs). One row
    per process (`id` is new at every start), so a restarted worker never renews a dead one's lease."""

    __tablename__ = "worker_leases"

    id: Mapped[uuid.UUID] = _pk()
    worker: Mapped[str] = mapped_column(String(200))  # the Prefect worker's name
    pool: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    runs: Mapped[list[Any]] = mapped_column(default=list)  # flow run ids (text) it holds now
    renewed_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class WorkerHealth(Base):
    """One health observation of a worker (GPU worker or chat worker)."""

    __tablename__ = "worker_health"
    __table_args__ = (Index("ix_worker_health_worker_type_checked_at", "worker_type", "checked_at"),)

    id: Mapped[uuid.UUID] = _pk()
    worker_type: Mapped[str] = mapped_column(String(16))
    worker_name: Mapped[str | None] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    response_time_ms: Mapped[float | None] = mapped_column(Float)
    load: Mapped[float | None] = mapped_column(Float)
    active_jobs: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime] = _created()


class ContentRefusal(Base):
    """One text the content gate refused: its category, the layer that refused it and the text's short
    hash, never the text (the `ourvidz_content_refusals_total` metric counts these)."""

    __tablename__ = "content_refusals"
    __table_args__ = (Index("ix_content_refusals_created_at", "created_at"),)

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID | None]
    category: Mapped[str] = mapped_column(String(32))
    layer: Mapped[str] = mapped_column(String(16))
    text_hash: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = _created()
