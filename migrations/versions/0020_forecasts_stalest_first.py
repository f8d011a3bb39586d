"""registration_forecasts: when each was last forecast, so that the cron forecasts the stalest first

The forecasts cron's step 4 forecast every undecided registration in id order, with no budget: a
run over more of them than its budget allows (about 70,000 on two cores) was cancelled at the job
timeout every time, and those past the point it reached were never forecast again. Each run now
forecasts the stalest first and stops at its budget; the next goes on with those left.

- `forecast_at`: when the cron last forecast it; NULL when its clock was derived since (and for
  every row kept before this revision: those go first, all in the next run when its budget
  allows, else over the next runs).
- `ix_registration_forecasts_stalest` `(forecast_at NULLS FIRST, registration_id) WHERE
  decided_at IS NULL` replaces `ix_registration_forecasts_undecided` `(registration_id) WHERE
  decided_at IS NULL`, whose one reader was step 4's walk in id order.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "registration_forecasts"
STALEST = "ix_registration_forecasts_stalest"
UNDECIDED = "ix_registration_forecasts_undecided"
UNDECIDED_ONLY = sa.text("decided_at IS NULL")
_TIME = app.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    # A nullable column without a default: PostgreSQL adds it without rewriting the table. It
    # is committed before the index builds below (`autocommit_block` commits what came before):
    # a run stopped during them leaves it, and the next run goes on.
    op.add_column(TABLE, sa.Column("forecast_at", _TIME, nullable=True), if_not_exists=True)
    # CONCURRENTLY, outside a transaction (as 0017): a running service keeps writing forecasts.
    # Each step tolerates a run stopped half-way (an INVALID build left behind is dropped first).
    with op.get_context().autocommit_block():
        op.drop_index(STALEST, table_name=TABLE, postgresql_concurrently=True, if_exists=True)
        op.create_index(
            STALEST,
            TABLE,
            [sa.text("forecast_at NULLS FIRST"), "registration_id"],
            postgresql_where=UNDECIDED_ONLY,
            postgresql_concurrently=True,
        )
        op.drop_index(UNDECIDED, table_name=TABLE, postgresql_concurrently=True, if_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(UNDECIDED, table_name=TABLE, postgresql_concurrently=True, if_exists=True)
        op.create_index(
            UNDECIDED,
            TABLE,
            ["registration_id"],
            postgresql_where=UNDECIDED_ONLY,
            postgresql_concurrently=True,
        )
        op.drop_index(STALEST, table_name=TABLE, postgresql_concurrently=True, if_exists=True)
    op.drop_column(TABLE, "forecast_at", if_exists=True)
