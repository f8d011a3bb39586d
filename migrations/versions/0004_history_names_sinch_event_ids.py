"""history names Sinch's event ids, never dedup keys

`registration_history.event_id` is documented (and served as `eventId`) as Sinch's event id, but the
worker wrote the event's dedup key there, which is `sha256:<hex>` of the body when Sinch sent no id.
From now on it holds Sinch's id or NULL; this clears the digests already written. A digest is never
a Sinch event id (those are ULIDs/UUIDs), so nothing real is lost. Only history rows written by
callbacks that carried no id are touched; the lock they take does not block callbacks (the inbox).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        sa.text("UPDATE registration_history SET event_id = NULL WHERE event_id LIKE 'sha256:%'")
    )


def downgrade() -> None:
    # The digests cannot be recomputed from the history alone; NULL is what they now mean.
    pass
