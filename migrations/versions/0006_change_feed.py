"""the change feed: registration_changes

One row per change of a registration's answer (app/changes/repository.py). The registrations kept
before this revision each get one change holding their answer as it stands, numbered in id order,
so a reader that follows the feed from its start holds every registration. A new table: no lock on
the others beyond the read of `registrations`. Processes of the previous version must be stopped
first (README, Deploying): a registration they wrote meanwhile would have no change.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = app.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "registration_changes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("registration_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_status", sa.String(64), nullable=True),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("recorded_at", _TIME, nullable=False),
        sa.Column("registration_type", sa.String(64), nullable=True),
        sa.Column("status_changed_at", _TIME, nullable=True),
        sa.Column("last_synced_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("sender_ids", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("market_code", sa.String(16), nullable=True),
        sa.Column("policy_id", sa.String(255), nullable=True),
        sa.Column("eta_date", sa.Date(), nullable=True),
        sa.Column("price", sa.JSON(), nullable=True),
        sa.Column("status_since", _TIME, nullable=True),
        sa.Column("reason_message", sa.Text(), nullable=True),
        sa.Column("reason_state", sa.String(64), nullable=True),
        sa.Column("reason_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_registration_changes"),
    )
    op.create_index("ix_registration_changes_seq", "registration_changes", ["seq"], unique=True)
    op.create_index(
        "ix_registration_changes_unnumbered",
        "registration_changes",
        ["id"],
        postgresql_where=sa.text("seq IS NULL"),
    )
    op.create_index("ix_registration_changes_recorded_at", "registration_changes", ["recorded_at"])
    # The columns of `_IMAGE`, written out: this SQL is a constant.
    op.execute(
        sa.text(
            "INSERT INTO registration_changes (seq, registration_id, kind, from_status, status, "
            "at, source, recorded_at, registration_type, status_changed_at, last_synced_at, "
            "created_at, updated_at, sender_ids, tags, market_code, policy_id, eta_date, price, "
            "status_since, reason_message, reason_state, reason_at) "
            "SELECT row_number() OVER (ORDER BY id), id, 'status', NULL, status, "
            "coalesce(status_since, status_changed_at, created_at), 'reconcile', updated_at, "
            "registration_type, status_changed_at, last_synced_at, created_at, updated_at, "
            "sender_ids, tags, market_code, policy_id, eta_date, price, status_since, "
            "reason_message, reason_state, reason_at FROM registrations ORDER BY id"
        )
    )


def downgrade() -> None:
    op.drop_index("ix_registration_changes_recorded_at", table_name="registration_changes")
    op.drop_index("ix_registration_changes_unnumbered", table_name="registration_changes")
    op.drop_index("ix_registration_changes_seq", table_name="registration_changes")
    op.drop_table("registration_changes")
