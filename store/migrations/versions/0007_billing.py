"""Billing with Stripe: a learner's customer and subscription, and the webhook events handled.

Mirrors ``Learner.stripe_customer_id`` (a unique index), ``Learner.stripe_subscription_id``,
``Learner.plan_source`` (``key`` for every learner so far: their plans were set by keys) and
``Learner.billing_event_at``, and the ``billing_events`` table whose primary key, the Stripe
event id, makes a replayed event a duplicate (``store.billing``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The four learner columns (plain ``ADD COLUMN``, no table rebuild) and ``billing_events``.

    SQLite rebuilds a table for most ``ALTER``s (Alembic's batch mode), and rebuilding
    ``learners`` with foreign keys on would cascade-delete their sessions; adding nullable or
    defaulted columns and a unique index needs no rebuild, on either backend.
    """
    op.add_column("learners", sa.Column("stripe_customer_id", sa.String(length=255), nullable=True))
    op.add_column(
        "learners", sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True)
    )
    op.add_column(
        "learners",
        sa.Column("plan_source", sa.String(length=16), nullable=False, server_default="key"),
    )
    op.add_column(
        "learners", sa.Column("billing_event_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_learners_stripe_customer_id", "learners", ["stripe_customer_id"], unique=True
    )
    op.create_table(
        "billing_events",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("learner_id", sa.String(length=36), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["learner_id"],
            ["learners.id"],
            name=op.f("fk_billing_events_learner_id_learners"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_billing_events")),
    )
    op.create_index("ix_billing_events_learner_id", "billing_events", ["learner_id"])


def downgrade() -> None:
    """Drop ``billing_events`` and the four columns (``DROP COLUMN``: SQLite 3.35+, no rebuild)."""
    op.drop_index("ix_billing_events_learner_id", table_name="billing_events")
    op.drop_table("billing_events")
    op.drop_index("ix_learners_stripe_customer_id", table_name="learners")
    for column in (
        "billing_event_at",
        "plan_source",
        "stripe_subscription_id",
        "stripe_customer_id",
    ):
        op.drop_column("learners", column)
