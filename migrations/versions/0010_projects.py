"""several Sinch projects: the `projects` table, and `project_id` on every project's data

Creates `projects` with one row, the project the single-project settings define, and gives every
existing row of a project's data to it:

- its id is `SINCH_PROJECT_ID` when the migration runs with it set (the settings, or
  `config.attributes["sinch_project_id"]`); else the placeholder `default`, which the service
  renames to `SINCH_PROJECT_ID` at its first start with it set (app/projects/service.py; the
  foreign keys follow with `ON UPDATE CASCADE`). Migrating with `SINCH_PROJECT_ID` set avoids that
  rewrite of every row.
- each column is added with that id as default (no table rewrite), the default then dropped;
  audit entries get it when their target is a registration, the others stay the deployment's.
- the counts' triggers (0009) now write the project of each delta; the totals, all the single
  project's, keep their values.

Downgrade refuses while more than one project exists (their rows could not be told apart).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

import app.core.db
from app.core.settings import DEFAULT_PROJECT_ID, Settings

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = app.core.db.UTCDateTime(timezone=True)
_ID = sa.String(255)

# table: (nullable, ON DELETE, index of the project's listing or None)
_TABLES: dict[str, tuple[bool, str | None, list[str] | None]] = {
    "registrations": (False, None, ["project_id", "id"]),
    "callback_events": (False, None, ["project_id", "id"]),
    "registration_history": (False, None, None),
    "registration_changes": (False, None, ["project_id", "seq"]),
    "deliveries": (False, None, ["project_id"]),
    "audit_log": (True, None, ["project_id", "id"]),
    "callback_secrets": (False, "CASCADE", ["project_id", "id"]),
    "count_deltas": (False, None, None),
    "count_totals": (False, None, None),
    "sync_state": (False, "CASCADE", None),
}
_KEYED = {"count_totals": "name", "sync_state": "name"}
"""Tables whose primary key becomes (project_id, this)."""


def _project_id() -> str:
    given = context.config.attributes.get("sinch_project_id")
    if given is None:
        given = Settings().sinch_project_id
    return str(given or DEFAULT_PROJECT_ID)


def _index_name(table: str, columns: list[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def _contributions(row: str, sign: str, from_clause: str = "") -> str:
    """What one event row (or every row of a transition table) counts for: 0009's, per project."""
    hour = "to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')"
    received = hour.format(col=f"{row}received_at")
    finished = hour.format(col=f"{row}processed_at")
    lag = f"round(extract(epoch FROM ({row}processed_at - {row}received_at)) * 1000)::bigint"
    done = f"{row}processed_at IS NOT NULL"
    project = f"{row}project_id"
    return (
        f"SELECT {project} AS project_id, 'event_state:' || {row}state AS name, "
        f"{sign}::bigint AS delta {from_clause} "
        f"UNION ALL SELECT {project}, 'h:' || {received} || ':received', {sign} {from_clause} "
        f"UNION ALL SELECT {project}, 'h:' || {finished} || ':finished', {sign} {from_clause} "
        f"WHERE {done} "
        f"UNION ALL SELECT {project}, 'h:' || {finished} || ':lag_ms', {sign} * {lag} "
        f"{from_clause} WHERE {done}"
    )


_FUNCTIONS = [
    f"""
CREATE OR REPLACE FUNCTION count_event_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO count_deltas (project_id, name, delta)
    SELECT project_id, name, sum(delta) * (CASE TG_OP WHEN 'DELETE' THEN -1 ELSE 1 END)
    FROM ({_contributions("", "1", "FROM changed_rows")}) AS c
    GROUP BY project_id, name HAVING sum(delta) <> 0;
    RETURN NULL;
END $$""",
    f"""
CREATE OR REPLACE FUNCTION count_event_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO count_deltas (project_id, name, delta)
    SELECT project_id, name, sum(delta) FROM (
        {_contributions("NEW.", "1")} UNION ALL {_contributions("OLD.", "-1")}
    ) AS c
    GROUP BY project_id, name HAVING sum(delta) <> 0;
    RETURN NULL;
END $$""",
    """
CREATE OR REPLACE FUNCTION count_registration_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO count_deltas (project_id, name, delta)
        VALUES (OLD.project_id, 'registration_status:' || OLD.status, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO count_deltas (project_id, name, delta)
        VALUES (NEW.project_id, 'registration_status:' || NEW.status, 1);
    END IF;
    RETURN NULL;
END $$""",
]


def _execute(statement: str) -> None:
    # As in 0009: sa.text() reads `:name` as a bind parameter; the count names' colons are escaped.
    op.execute(sa.text(statement.replace("':", "'\\:")))


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("key_id", sa.String(255), nullable=True),
        sa.Column("key_secret_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("from_settings", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
    )
    project_id = _project_id()
    op.execute(
        sa.text(
            "INSERT INTO projects (id, name, from_settings, created_at, updated_at) "
            "VALUES (:id, :id, true, now(), now())"
        ).bindparams(id=project_id)
    )
    for table, (nullable, ondelete, index) in _TABLES.items():
        # A constant default: PostgreSQL adds the column without rewriting the table.
        op.add_column(
            table,
            sa.Column("project_id", _ID, nullable=nullable, server_default=sa.literal(project_id)),
        )
        op.alter_column(table, "project_id", server_default=None)
        op.create_foreign_key(
            f"fk_{table}_project_id_projects",
            table,
            "projects",
            ["project_id"],
            ["id"],
            onupdate="CASCADE",
            ondelete=ondelete,
        )
        if index:
            op.create_index(_index_name(table, index), table, index)
    # The deployment's own entries (tokens, subscriptions) belong to no project.
    op.execute(
        "UPDATE audit_log SET project_id = NULL "
        "WHERE target IS NULL OR target NOT IN (SELECT id FROM registrations)"
    )
    for table, column in _KEYED.items():
        op.drop_constraint(f"pk_{table}", table, type_="primary")
        op.create_primary_key(f"pk_{table}", table, ["project_id", column])
    op.drop_constraint("uq_callback_events_dedup_key", "callback_events", type_="unique")
    op.create_unique_constraint(
        "uq_callback_events_project_id_dedup_key", "callback_events", ["project_id", "dedup_key"]
    )
    for statement in _FUNCTIONS:
        _execute(statement)


def downgrade() -> None:
    projects = op.get_bind().execute(sa.text("SELECT count(*) FROM projects")).scalar_one()
    if projects > 1:
        raise RuntimeError(
            f"{projects} projects exist: downgrading below 0010 would mix their rows; remove all"
            " but one first"
        )
    # 0009's functions, as that revision made them.
    counts = context.script.get_revision("0009")
    assert counts is not None
    for statement in counts.module._FUNCTIONS:
        _execute(statement.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    op.drop_constraint("uq_callback_events_project_id_dedup_key", "callback_events", type_="unique")
    op.create_unique_constraint("uq_callback_events_dedup_key", "callback_events", ["dedup_key"])
    for table, column in _KEYED.items():
        op.drop_constraint(f"pk_{table}", table, type_="primary")
        op.create_primary_key(f"pk_{table}", table, [column])
    for table, (_, _, index) in reversed(_TABLES.items()):
        if index:
            op.drop_index(_index_name(table, index), table_name=table)
        op.drop_constraint(f"fk_{table}_project_id_projects", table, type_="foreignkey")
        op.drop_column(table, "project_id")
    op.drop_table("projects")
