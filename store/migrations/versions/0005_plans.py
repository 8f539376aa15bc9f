"""Plans and erasure: a learner's plan, the plans a key may grant, quota reservations, erased.

Mirrors ``ApiKey.plans``, ``Learner.plan``, ``Learner.quota_version``, ``Learner.erased`` and
``TutorSession.tts_reserved``. Keys made before plans existed keep every tier (``*``);
learners get ``free``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the five columns."""
    op.add_column(
        "api_keys", sa.Column("plans", sa.String(length=500), nullable=False, server_default="*")
    )
    op.add_column(
        "learners", sa.Column("plan", sa.String(length=32), nullable=False, server_default="free")
    )
    op.add_column(
        "learners", sa.Column("quota_version", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "learners", sa.Column("erased", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("sessions", sa.Column("tts_reserved", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop the five columns."""
    op.drop_column("sessions", "tts_reserved")
    op.drop_column("learners", "erased")
    op.drop_column("learners", "quota_version")
    op.drop_column("learners", "plan")
    op.drop_column("api_keys", "plans")
