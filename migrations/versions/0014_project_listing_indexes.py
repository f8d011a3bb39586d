"""indexes of a project's registration listings: by status, and its feed of changes

`GET /v1/registrations?projectId=A&status=S` walked (project_id, id) or (status, id) and filtered
the other column: the planner takes a project and a state as independent, so when a project has
few or no rows in a state (a small project, a rare state) one page read the whole table
(bench/api.py --projects 10: 100,000 rows read for an empty page, p99 60 ms). The same holds for
`projectId` with `updatedSince`, each project's incremental sync, on (status_changed_at, id).
(project_id, status, id) and (project_id, status_changed_at, id) match those pages' equality and
order exactly: a page reads its own rows only. Built CONCURRENTLY, as 0002's, so that a
deployment keeps accepting callbacks while they build.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_registrations_project_id_status_id", "registrations", ["project_id", "status", "id"]),
    (
        "ix_registrations_project_id_status_changed_at_id",
        "registrations",
        ["project_id", "status_changed_at", "id"],
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
