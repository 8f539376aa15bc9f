"""Usage rows carry the id of the write that made them, so a retried write counts once.

Session writes the database could not take wait in the server's outbox
(:mod:`runtime.outbox`) and are retried; a retry after a commit whose answer was lost must not
count the usage twice, so ``usage_events.write_id`` is unique. Rows from before have none.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the unique ``write_id`` column."""
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("write_id", sa.String(length=36), nullable=True))
        batch.create_unique_constraint("uq_usage_events_write_id", ["write_id"])


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_constraint("uq_usage_events_write_id", type_="unique")
        batch.drop_column("write_id")
