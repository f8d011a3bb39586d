"""time in state and forecasts: the read model of app/forecasts/

Four new tables, each row with its project (`project_id`, following the project's rename like
every project's data, and deleted with it), filled by the worker's forecasts cron (nothing existing is rewritten or locked):
`registration_stays` (each registration's stays in each state, on Sinch's clock),
`registration_forecasts` (its decision clock and forecast; the partial index on `overdue` makes
`GET /v1/registrations?overdue=true` an index walk), `time_in_state` and `decision_curves` (the
figures per market, type and state).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = app.core.db.UTCDateTime(timezone=True)


def _of_project(table: str) -> sa.ForeignKeyConstraint:
    """A row's project: follows the project's rename, goes with the project."""
    return sa.ForeignKeyConstraint(
        ["project_id"],
        ["projects.id"],
        name=f"fk_{table}_project_id_projects",
        onupdate="CASCADE",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "registration_stays",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("registration_id", sa.String(255), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("market_code", sa.String(16), nullable=True),
        sa.Column("registration_type", sa.String(64), nullable=True),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("entered_at", _TIME, nullable=False),
        sa.Column("left_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["registrations.id"],
            name="fk_registration_stays_registration_id_registrations",
            ondelete="CASCADE",
        ),
        _of_project("registration_stays"),
        sa.PrimaryKeyConstraint("id", name="pk_registration_stays"),
    )
    op.create_index(
        "ix_registration_stays_registration_id", "registration_stays", ["registration_id"]
    )
    op.create_table(
        "registration_forecasts",
        sa.Column("registration_id", sa.String(255), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("market_code", sa.String(16), nullable=True),
        sa.Column("registration_type", sa.String(64), nullable=True),
        sa.Column("eta_date", sa.Date(), nullable=True),
        sa.Column("submitted_at", _TIME, nullable=True),
        sa.Column("decided_at", _TIME, nullable=True),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.Column("customer_seconds", sa.Float(), nullable=False),
        sa.Column("waiting_on_customer_since", _TIME, nullable=True),
        sa.Column("decision_p50", _TIME, nullable=True),
        sa.Column("decision_p85", _TIME, nullable=True),
        sa.Column("overdue", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("overdue_since", _TIME, nullable=True),
        sa.Column("basis", sa.String(32), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("approval_chance", sa.Float(), nullable=True),
        sa.Column("sinch_seconds", sa.Float(), nullable=False),
        sa.Column("waited_customer_seconds", sa.Float(), nullable=False),
        sa.Column("stays_from", _TIME, nullable=False),
        sa.Column("computed_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["registrations.id"],
            name="fk_registration_forecasts_registration_id_registrations",
            ondelete="CASCADE",
        ),
        _of_project("registration_forecasts"),
        sa.PrimaryKeyConstraint("registration_id", name="pk_registration_forecasts"),
    )
    op.create_index(
        "ix_registration_forecasts_overdue",
        "registration_forecasts",
        ["registration_id"],
        postgresql_where=sa.text("overdue"),
    )
    op.create_index(
        "ix_registration_forecasts_undecided",
        "registration_forecasts",
        ["registration_id"],
        postgresql_where=sa.text("decided_at IS NULL"),
    )
    op.create_index(
        "ix_registration_forecasts_aging",
        "registration_forecasts",
        ["overdue", "sinch_seconds"],
        postgresql_where=sa.text("decided_at IS NULL AND submitted_at IS NOT NULL"),
    )
    op.create_table(
        "time_in_state",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("since_month", sa.Date(), nullable=False),
        sa.Column("market_code", sa.String(16), nullable=True),
        sa.Column("registration_type", sa.String(64), nullable=True),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("p50", sa.BigInteger(), nullable=True),
        sa.Column("p85", sa.BigInteger(), nullable=True),
        sa.Column("p95", sa.BigInteger(), nullable=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("open", sa.Integer(), nullable=False),
        sa.Column("computed_at", _TIME, nullable=False),
        _of_project("time_in_state"),
        sa.PrimaryKeyConstraint("id", name="pk_time_in_state"),
    )
    op.create_index("ix_time_in_state_since_month", "time_in_state", ["since_month", "market_code"])
    op.create_table(
        "decision_curves",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("market_code", sa.String(16), nullable=True),
        sa.Column("registration_type", sa.String(64), nullable=True),
        sa.Column("bins", sa.JSON(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("open", sa.Integer(), nullable=False),
        sa.Column("p50", sa.BigInteger(), nullable=True),
        sa.Column("p85", sa.BigInteger(), nullable=True),
        sa.Column("approved_share", sa.Float(), nullable=True),
        sa.Column("eta_samples", sa.Integer(), nullable=False),
        sa.Column("eta_held", sa.Integer(), nullable=False),
        sa.Column("computed_at", _TIME, nullable=False),
        _of_project("decision_curves"),
        sa.PrimaryKeyConstraint("id", name="pk_decision_curves"),
    )


def downgrade() -> None:
    op.drop_table("decision_curves")
    op.drop_index("ix_time_in_state_since_month", table_name="time_in_state")
    op.drop_table("time_in_state")
    op.drop_index("ix_registration_forecasts_aging", table_name="registration_forecasts")
    op.drop_index("ix_registration_forecasts_undecided", table_name="registration_forecasts")
    op.drop_index("ix_registration_forecasts_overdue", table_name="registration_forecasts")
    op.drop_table("registration_forecasts")
    op.drop_index("ix_registration_stays_registration_id", table_name="registration_stays")
    op.drop_table("registration_stays")
