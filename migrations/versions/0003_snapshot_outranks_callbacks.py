"""a snapshot outranks the callbacks applied before its fetch

`registrations.callback_applied_at` records when a trusted callback last moved the status (our
clock), so that a document fetched from Sinch afterwards wins whatever time the callback claimed;
`registration_history.note` says when such a document overruled a callback. Both nullable, with no
default: adding them is a catalogue change on PostgreSQL (no table rewrite, no long lock). Existing
registrations start with no callback time, so the next snapshot of each is applied: that is what
repairs a registration a callback from the future had pinned.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(
            sa.Column("callback_applied_at", app.core.db.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("registration_history") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registration_history") as batch:
        batch.drop_column("note")
    with op.batch_alter_table("registrations") as batch:
        batch.drop_column("callback_applied_at")
