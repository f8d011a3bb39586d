"""inbox, registrations, history, sync state

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "callback_events",
        sa.Column(
            "id",
            sa.BigInteger(),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("registration_id", sa.String(length=255), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("peer", sa.String(length=64), nullable=True),
        sa.Column("secret_index", sa.SmallInteger(), nullable=False),
        sa.Column("received_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duplicate_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("processed_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_events")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_callback_events_dedup_key")),
    )
    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_callback_events_registration_id_id", ["registration_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_callback_events_state_received_at", ["state", "received_at"], unique=False
        )

    op.create_table(
        "registrations",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("registration_type", sa.String(length=64), nullable=True),
        sa.Column("status_changed_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_synced_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sinch", sa.JSON(), nullable=True),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registrations")),
    )
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_registrations_registration_type_id", ["registration_type", "id"], unique=False
        )
        batch_op.create_index(
            "ix_registrations_status_changed_at_id", ["status_changed_at", "id"], unique=False
        )
        batch_op.create_index("ix_registrations_status_id", ["status", "id"], unique=False)

    op.create_table(
        "sync_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_state")),
    )
    op.create_table(
        "registration_history",
        sa.Column(
            "id",
            sa.BigInteger(),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("registration_id", sa.String(length=255), nullable=False),
        sa.Column("from_status", sa.String(length=64), nullable=True),
        sa.Column("to_status", sa.String(length=64), nullable=False),
        sa.Column("at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("recorded_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["registrations.id"],
            name=op.f("fk_registration_history_registration_id_registrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration_history")),
    )
    with op.batch_alter_table("registration_history", schema=None) as batch_op:
        batch_op.create_index(
            "ix_registration_history_registration_id_at",
            ["registration_id", "at", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("registration_history", schema=None) as batch_op:
        batch_op.drop_index("ix_registration_history_registration_id_at")

    op.drop_table("registration_history")
    op.drop_table("sync_state")
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_index("ix_registrations_status_id")
        batch_op.drop_index("ix_registrations_status_changed_at_id")
        batch_op.drop_index("ix_registrations_registration_type_id")

    op.drop_table("registrations")
    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.drop_index("ix_callback_events_state_received_at")
        batch_op.drop_index("ix_callback_events_registration_id_id")

    op.drop_table("callback_events")
