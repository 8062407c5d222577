"""jobs.runner, jobs.runner_expires_at: a worker outside Prefect that runs a job, and its lease

A job a worker callback reported `processing` had no owner recovery could see: without a flow run it
stayed processing for ever, and with one it was re-run when that run ended. The callback's worker now
owns the job until its lease (renewed by each of its reports) expires.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("runner", sa.String(length=200), nullable=True))
    op.add_column("jobs", sa.Column("runner_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("runner_expires_at")
        batch.drop_column("runner")
