"""Learner access tokens: a learner opens their own app without the operator's API key.

Mirrors ``LearnerAccessToken``: the hash of a short-lived token, minted by the app that owns
the learner (``POST /api/v1/learners/{id}/access``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``learner_access_tokens``."""
    op.create_table(
        "learner_access_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("learner_id", sa.String(length=36), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["learner_id"],
            ["learners.id"],
            name=op.f("fk_learner_access_tokens_learner_id_learners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_learner_access_tokens")),
        sa.UniqueConstraint("hash", name=op.f("uq_learner_access_tokens_hash")),
    )
    op.create_index("ix_learner_access_tokens_learner_id", "learner_access_tokens", ["learner_id"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_learner_access_tokens_learner_id", table_name="learner_access_tokens")
    op.drop_table("learner_access_tokens")
