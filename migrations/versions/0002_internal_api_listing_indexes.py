"""indexes of the internal API's listings

Events newest first within a state; registrations changed since a time within a status or a type.
On PostgreSQL the indexes are built CONCURRENTLY (outside the migration's transaction) so that a
deployment with a large inbox keeps accepting callbacks while they build.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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


@contextmanager
def _outside_transaction_on_postgresql() -> Iterator[bool]:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            yield True
    else:
        yield False


def upgrade() -> None:
    with _outside_transaction_on_postgresql() as concurrently:
        for name, table, columns in INDEXES:
            op.create_index(
                name, table, columns, unique=False, postgresql_concurrently=concurrently
            )


def downgrade() -> None:
    with _outside_transaction_on_postgresql() as concurrently:
        for name, table, _columns in reversed(INDEXES):
            op.drop_index(name, table_name=table, postgresql_concurrently=concurrently)
