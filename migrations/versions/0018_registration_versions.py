"""registration_versions: each distinct document Sinch gave for a registration (issue 27)

One new table, and the document each registration holds now kept as its version 1 (source
`migration`, at its `last_synced_at`), so that the first document applied after the upgrade is
compared with it. The backfill reads `BATCH` registrations at a time in id order, in the
migration's transaction (the table is new: nobody waits on it). Processes of the previous version
must be stopped first (README, Deploying): they would apply documents without keeping them.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db
from app.catalog.diff import digest

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500
_TIME = app.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "registration_versions",
        sa.Column("registration_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("recorded_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_registration_versions_project_id_projects"),
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["registrations.id"],
            name=op.f("fk_registration_versions_registration_id_registrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "registration_id", "version", name=op.f("pk_registration_versions")
        ),
    )
    _backfill(op.get_bind())


def _backfill(connection: sa.Connection) -> None:
    """Each registration's current document as its version 1."""
    registrations = sa.table(
        "registrations",
        sa.column("id", sa.String()),
        sa.column("project_id", sa.String()),
        sa.column("sinch", sa.JSON()),
        sa.column("last_synced_at", _TIME),
        sa.column("updated_at", _TIME),
    )
    versions = sa.table(
        "registration_versions",
        *(
            sa.column(name, type_)
            for name, type_ in (
                ("registration_id", sa.String()),
                ("version", sa.Integer()),
                ("project_id", sa.String()),
                ("document", sa.JSON()),
                ("digest", sa.String()),
                ("source", sa.String()),
                ("at", _TIME),
                ("recorded_at", _TIME),
            )
        ),
    )
    now = connection.execute(sa.select(sa.func.now())).scalar_one()
    after = ""
    while True:
        rows = connection.execute(
            sa.select(
                registrations.c.id,
                registrations.c.project_id,
                registrations.c.sinch,
                sa.func.coalesce(registrations.c.last_synced_at, registrations.c.updated_at).label(
                    "at"
                ),
            )
            .where(registrations.c.id > after, registrations.c.sinch.is_not(None))
            .order_by(registrations.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        kept = [
            {
                "registration_id": row.id,
                "version": 1,
                "project_id": row.project_id,
                "document": row.sinch,
                "digest": digest(row.sinch),
                "source": "migration",
                "at": row.at,
                "recorded_at": now,
            }
            for row in rows
            if isinstance(row.sinch, dict)
        ]
        if kept:
            connection.execute(sa.insert(versions), kept)


def downgrade() -> None:
    op.drop_table("registration_versions")
