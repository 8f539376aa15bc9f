"""Assessments of learner turns: tutors' checked mistakes and the examiner's ACS grades.

Mirrors ``store.models.Mistake`` and ``store.models.AcsResult`` (portable types, constraint
names per ``store.models.NAMING_CONVENTION`` wrapped in ``op.f``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _session_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["session_id"],
        ["sessions.id"],
        name=op.f(f"fk_{table}_session_id_sessions"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create ``mistakes`` and ``acs_results`` with their indexes."""
    op.create_table(
        "mistakes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("turn_index", sa.Integer(), nullable=True),
        sa.Column("sentence", sa.Text(), nullable=False),
        sa.Column("corrected_sentence", sa.Text(), nullable=False),
        sa.Column("original", sa.String(length=500), nullable=False),
        sa.Column("corrected", sa.String(length=500), nullable=False),
        sa.Column("rule", sa.String(length=500), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("spoken", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _session_fk("mistakes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mistakes")),
    )
    op.create_index(op.f("ix_mistakes_session_id"), "mistakes", ["session_id"])
    op.create_index(op.f("ix_mistakes_category"), "mistakes", ["category"])
    op.create_table(
        "acs_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("turn_index", sa.Integer(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("question_id", sa.String(length=30), nullable=False),
        sa.Column("task", sa.String(length=20), nullable=False),
        sa.Column("grade", sa.String(length=16), nullable=False),
        sa.Column("missing", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "grade IN ('satisfactory', 'probe', 'unsatisfactory')",
            name=op.f("ck_acs_results_grade"),
        ),
        _session_fk("acs_results"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_acs_results")),
    )
    op.create_index(op.f("ix_acs_results_session_id"), "acs_results", ["session_id"])
    op.create_index(op.f("ix_acs_results_task"), "acs_results", ["task"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("acs_results")
    op.drop_table("mistakes")
