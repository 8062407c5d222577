"""worker_leases: a GPU worker process's liveness, renewed every few seconds, and the runs it holds

Recovery used to learn of a dead worker from its flow runs' missing heartbeats (Prefect sends them
every 30 s at the least, so a kill took about a minute to notice). A lease that stops being renewed
names the dead process's runs within seconds.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "worker_leases",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("runs", JSON, nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_leases")),
    )
    op.create_index(op.f("ix_worker_leases_expires_at"), "worker_leases", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_worker_leases_expires_at"), table_name="worker_leases")
    op.drop_table("worker_leases")
