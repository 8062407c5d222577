"""content_refusals: every text the content gate refused, as category, layer and hash (never the text)

Refusals at the gateway leave no job row, so nothing counted them; the metrics now report refusals per
layer and category from this table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "content_refusals",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("layer", sa.String(length=16), nullable=False),
        sa.Column("text_hash", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_content_refusals_created_at", "content_refusals", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_content_refusals_created_at", table_name="content_refusals")
    op.drop_table("content_refusals")
