"""deliveries: the due look-ups on partial indexes of the pending ones

A delivery is written pending and, most often within the second, marked succeeded. That update
changes `state`, so PostgreSQL writes the new row version into every index of the table whose
predicate it meets: with `state` leading two full indexes, and a third (subscription, registration,
change) that only the pending look-ups used, each success cost seven index entries. The due
look-ups now use partial indexes of the pending rows (`WHERE state = 'pending'`), which a row
leaves when it succeeds: four entries per success (measured: 60 to 40 microseconds of PostgreSQL's
CPU per delivery's success; bench/README.md, "Deliveries").

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("state = 'pending'")
NEW = (
    ("ix_deliveries_pending_next_attempt_at", ["next_attempt_at"]),
    (
        "ix_deliveries_pending_subscription_id_next_attempt_at",
        ["subscription_id", "next_attempt_at"],
    ),
)
OLD = (
    ("ix_deliveries_state_next_attempt_at", ["state", "next_attempt_at"]),
    (
        "ix_deliveries_subscription_id_state_next_attempt_at",
        ["subscription_id", "state", "next_attempt_at"],
    ),
    (
        "ix_deliveries_subscription_id_registration_id_change_id",
        ["subscription_id", "registration_id", "change_id"],
    ),
)


# CONCURRENTLY, outside a transaction (as 0002 and 0014): a running service keeps writing
# deliveries while the indexes are built.
def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, columns in NEW:
            op.create_index(
                name, "deliveries", columns, postgresql_where=PENDING, postgresql_concurrently=True
            )
        for name, _columns in OLD:
            op.drop_index(name, table_name="deliveries", postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, columns in OLD:
            op.create_index(name, "deliveries", columns, postgresql_concurrently=True)
        for name, _columns in NEW:
            op.drop_index(name, table_name="deliveries", postgresql_concurrently=True)
