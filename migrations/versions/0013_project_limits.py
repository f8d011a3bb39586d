"""tokens and subscriptions limited to projects

`api_tokens.project_ids`: the projects a token may see (NULL: every project). Kept with the token
(tens of rows, read whole by each API process: app/tokens/directory.py), so a plain array.
`subscriptions.project_filter`: the projects whose changes it receives, kept as `,A,B,` like its
other filters (app/changes/outbox.py matches it in SQL); NULL: every project.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_tokens", sa.Column("project_ids", postgresql.ARRAY(sa.String(255)), nullable=True)
    )
    op.add_column("subscriptions", sa.Column("project_filter", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("subscriptions", "project_filter")
    op.drop_column("api_tokens", "project_ids")
