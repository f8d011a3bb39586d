"""deliveries: no index but the pending deliveries' own gives a subscription's in change order

The sender's due read (app/subscriptions/repository.py, `due`) takes a window of a subscription's
first pending deliveries in change order, which the partial index `(subscription_id, change_id)
WHERE state = 'pending'` gives in 128 entries whatever the backlog. Two other indexes let
PostgreSQL read the whole backlog instead:
- `ix_deliveries_change_id`, a b-tree of every delivery's change: plans kept for the prepared
  statement walked it from the start, skipping the delivered ones (26-44 ms at 51k deliveries in
  bench.worker). It serves equalities only (the cascade from pruned changes, the pruning's
  reads), which a hash index answers without giving any order.
- `ix_deliveries_pending_next_attempt_at`, every pending delivery by next attempt: with one
  subscriber 2,000 behind, PostgreSQL read all of them from it and sorted them. Its one reader,
  the dispatcher's "when does the next retry come due", now probes each enabled subscription's
  `(subscription_id, next_attempt_at)` index, and each delivery written writes one index less.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BY_CHANGE = "ix_deliveries_change_id"
BUILDING = "ix_deliveries_change_id_building"
BY_NEXT_ATTEMPT = "ix_deliveries_pending_next_attempt_at"


def _by_change(using: str) -> None:
    # Built beside the old one, then renamed: the cascades keep an index all along. Each step
    # tolerates a run stopped half-way (CONCURRENTLY cannot be rolled back): an INVALID build
    # left behind is dropped first, and the old index may already be gone.
    op.drop_index(BUILDING, table_name="deliveries", postgresql_concurrently=True, if_exists=True)
    op.create_index(
        BUILDING, "deliveries", ["change_id"], postgresql_using=using, postgresql_concurrently=True
    )
    op.drop_index(BY_CHANGE, table_name="deliveries", postgresql_concurrently=True, if_exists=True)
    op.execute(f"ALTER INDEX {BUILDING} RENAME TO {BY_CHANGE}")


# CONCURRENTLY, outside a transaction (as 0017): a running service keeps writing deliveries
# while the indexes are built.
def upgrade() -> None:
    with op.get_context().autocommit_block():
        _by_change("hash")
        op.drop_index(
            BY_NEXT_ATTEMPT, table_name="deliveries", postgresql_concurrently=True, if_exists=True
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            BY_NEXT_ATTEMPT,
            "deliveries",
            ["next_attempt_at"],
            postgresql_where=sa.text("state = 'pending'"),
            postgresql_concurrently=True,
        )
        _by_change("btree")
