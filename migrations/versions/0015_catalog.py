"""catalog_markets, catalog_policies, policy_changes: the markets and policies of each project

Three new tables (app/catalog/ writes them): nothing existing is rewritten. Each row belongs to a
project and goes with it (ON DELETE CASCADE): a copy of what Sinch serves, fetched again at will.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = app.core.db.UTCDateTime(timezone=True)


def _project(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["project_id"],
        ["projects.id"],
        name=op.f(f"fk_{table}_project_id_projects"),
        onupdate="CASCADE",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "catalog_markets",
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("market_code", sa.String(16), nullable=False),
        sa.Column("registration_type", sa.String(64), nullable=False),
        sa.Column("sort_key", sa.String(400), nullable=False),
        sa.Column("market_name", sa.String(255), nullable=True),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("policy_ids", sa.JSON(), nullable=False),
        sa.Column("refreshed_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        _project("catalog_markets"),
        sa.PrimaryKeyConstraint(
            "project_id", "market_code", "registration_type", name=op.f("pk_catalog_markets")
        ),
    )
    op.create_index("ix_catalog_markets_sort_key", "catalog_markets", ["sort_key"], unique=True)
    op.create_table(
        "catalog_policies",
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("policy_id", sa.String(255), nullable=False),
        sa.Column("market_code", sa.String(16), nullable=True),
        sa.Column("registration_type", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("refreshed_at", _TIME, nullable=False),
        sa.Column("changed_at", _TIME, nullable=False),
        _project("catalog_policies"),
        sa.PrimaryKeyConstraint("project_id", "policy_id", name=op.f("pk_catalog_policies")),
    )
    op.create_table(
        "policy_changes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("policy_id", sa.String(255), nullable=False),
        sa.Column("changed_at", _TIME, nullable=False),
        sa.Column("diff", sa.JSON(), nullable=False),
        sa.Column("registrations", sa.Integer(), nullable=False),
        _project("policy_changes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_changes")),
    )
    op.create_index(
        "ix_policy_changes_project_id_policy_id_id",
        "policy_changes",
        ["project_id", "policy_id", "id"],
    )


def downgrade() -> None:
    op.drop_table("policy_changes")
    op.drop_table("catalog_policies")
    op.drop_table("catalog_markets")
