"""delivery_attempts (the attempts log); subscriptions.disabled_at and kind_filter

One new table (app/changes/outbox.py writes it, as it writes deliveries) and two nullable columns:
nothing existing is rewritten. An attempt belongs to its delivery's project, through the delivery.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = app.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("disabled_at", _TIME, nullable=True))
    op.add_column("subscriptions", sa.Column("kind_filter", sa.Text(), nullable=True))
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("attempted_at", _TIME, nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("request_headers", sa.JSON(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    op.create_index(
        "ix_delivery_attempts_subscription_id_attempted_at_id",
        "delivery_attempts",
        ["subscription_id", "attempted_at", "id"],
    )
    op.create_index(
        "ix_delivery_attempts_failed_subscription_id_attempted_at_id",
        "delivery_attempts",
        ["subscription_id", "attempted_at", "id"],
        postgresql_where=sa.text("NOT succeeded"),
    )
    op.create_index(
        "ix_delivery_attempts_delivery_id_id", "delivery_attempts", ["delivery_id", "id"]
    )


def downgrade() -> None:
    op.drop_table("delivery_attempts")
    op.drop_column("subscriptions", "kind_filter")
    op.drop_column("subscriptions", "disabled_at")
