"""indexes of the internal API's listings

Events newest first within a state; registrations changed since a time within a status or a type.
The indexes are built CONCURRENTLY (outside the migration's transaction) so that a
deployment with a large inbox keeps accepting callbacks while they build.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_callback_events_state_id", "callback_events", ["state", "id"]),
    (
        "ix_registrations_status_status_changed_at_id",
        "registrations",
        ["status", "status_changed_at", "id"],
    ),
    (
        "ix_registrations_registration_type_status_changed_at_id",
        "registrations",
        ["registration_type", "status_changed_at", "id"],
    ),
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, columns in INDEXES:
            op.create_index(name, table, columns, unique=False, postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, _columns in reversed(INDEXES):
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
