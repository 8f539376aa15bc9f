"""Phone identity: a number becomes a learner's only once a code called to it is entered.

``learners.phone`` was unique over all keys and set by whoever created the learner; now it is
unique per key (``uq_learners_owner_key_id_phone``) and only a verified number
(``phone_verified_at``) is stored. Numbers stored before this revision were never proved, so
they are cleared (their learners verify them again); guests of unknown callers keep theirs,
which is the caller id itself. ``phone_verifications`` holds the codes called to numbers
(hashed, expiring).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Per-key uniqueness, the verified timestamp and the verification table."""
    with op.batch_alter_table("learners") as batch:
        batch.drop_constraint("uq_learners_phone", type_="unique")
        batch.add_column(sa.Column("phone_verified_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint("uq_learners_owner_key_id_phone", ["owner_key_id", "phone"])
    op.create_index("ix_learners_phone", "learners", ["phone"])
    guests = "SELECT id FROM api_keys WHERE name = 'phone-guests'"
    op.execute(
        f"UPDATE learners SET phone_verified_at = created_at "
        f"WHERE phone IS NOT NULL AND owner_key_id IN ({guests})"
    )
    op.execute("UPDATE learners SET phone = NULL WHERE phone_verified_at IS NULL")
    op.create_table(
        "phone_verifications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("learner_id", sa.String(length=36), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("carrier", sa.String(length=16), nullable=False),
        sa.Column("call_id", sa.String(length=100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["learner_id"],
            ["learners.id"],
            name=op.f("fk_phone_verifications_learner_id_learners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phone_verifications")),
    )
    op.create_index("ix_phone_verifications_learner_id", "phone_verifications", ["learner_id"])


def downgrade() -> None:
    """Back to one global unique number per learner (verification state is dropped)."""
    op.drop_index("ix_phone_verifications_learner_id", table_name="phone_verifications")
    op.drop_table("phone_verifications")
    op.drop_index("ix_learners_phone", table_name="learners")
    with op.batch_alter_table("learners") as batch:
        batch.drop_constraint("uq_learners_owner_key_id_phone", type_="unique")
        batch.drop_column("phone_verified_at")
        batch.create_unique_constraint("uq_learners_phone", ["phone"])
