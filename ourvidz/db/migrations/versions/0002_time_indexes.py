"""indexes on the time columns that metrics, reports and webhook redelivery select by

Without them every /metrics scrape, the daily usage report and the 30 s due-webhook query scan
whole tables (about 2 s per scrape at a million jobs).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("jobs", "created_at"),
    ("jobs", "completed_at"),
    ("usage_logs", "created_at"),
    ("webhook_deliveries", "created_at"),
)


def upgrade() -> None:
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in reversed(INDEXES):
        op.drop_index(f"ix_{table}_{column}", table_name=table)
