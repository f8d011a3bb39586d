"""subscriptions and deliveries: the changes pushed to internal services

Two new tables (app/subscriptions/): nothing existing is rewritten or locked.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = app.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status_filter", sa.Text(), nullable=True),
        sa.Column("type_filter", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_until", _TIME, nullable=True),
        sa.Column("failing_since", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subscriptions"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("change_id", sa.BigInteger(), nullable=False),
        sa.Column("registration_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name="fk_deliveries_subscription_id_subscriptions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["change_id"],
            ["registration_changes.id"],
            name="fk_deliveries_change_id_registration_changes",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
    )
    op.create_index(
        "ix_deliveries_state_next_attempt_at", "deliveries", ["state", "next_attempt_at"]
    )
    op.create_index(
        "ix_deliveries_subscription_id_state_next_attempt_at",
        "deliveries",
        ["subscription_id", "state", "next_attempt_at"],
    )
    op.create_index(
        "ix_deliveries_subscription_id_registration_id_change_id",
        "deliveries",
        ["subscription_id", "registration_id", "change_id"],
    )
    op.create_index("ix_deliveries_subscription_id_id", "deliveries", ["subscription_id", "id"])
    pending = sa.text("state = 'pending'")
    op.create_index(
        "ix_deliveries_pending_subscription_id_change_id",
        "deliveries",
        ["subscription_id", "change_id"],
        postgresql_where=pending,
    )
    op.create_index(
        "ix_deliveries_pending_subscription_id_registration_id_change_id",
        "deliveries",
        ["subscription_id", "registration_id", "change_id"],
        postgresql_where=pending,
    )
    op.create_index("ix_deliveries_change_id", "deliveries", ["change_id"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("subscriptions")
