"""counts kept by the database: events by state, registrations by status, the hourly series

Two tables (docs/counting.md): `count_deltas`, insert-only rows that triggers write in the
transaction of every change, and `count_totals`, what the worker folds them into. A count is its
total plus its unfolded deltas: read in one statement, whatever the size of the tables counted.

The triggers are the one place that keeps the counts: every statement that inserts, updates or
deletes an event or a registration passes through them, whichever code path (or person) runs it.
Inserts and deletes of events are counted once per statement (transition tables:
a batch of callbacks adds one delta row per state and hour, not one per callback); updates once
per row whose counted columns changed. No trigger updates a shared row, so concurrent writers never
wait for each other.

Backfill: CREATE TRIGGER locks the tables against writes until this migration commits, so the
totals computed here and the deltas written after it never overlap or miss a row.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Names: `event_state:<state>`, `registration_status:<status>`, and per UTC hour of the event's
# arrival or finish `h:<YYYY-MM-DDTHH>:received`, `h:<...>:finished`, `h:<...>:lag_ms` (the sum of
# finish minus arrival, in ms, of the events finished in that hour).


def _contributions(row: str, sign: str, from_clause: str = "") -> str:
    """What one event row (or, with `from_clause`, every row of a transition table) counts for."""
    hour = "to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')"
    received = hour.format(col=f"{row}received_at")
    finished = hour.format(col=f"{row}processed_at")
    lag = f"round(extract(epoch FROM ({row}processed_at - {row}received_at)) * 1000)::bigint"
    done = f"{row}processed_at IS NOT NULL"
    return (
        f"SELECT 'event_state:' || {row}state AS name, {sign}::bigint AS delta {from_clause} "
        f"UNION ALL SELECT 'h:' || {received} || ':received', {sign} {from_clause} "
        f"UNION ALL SELECT 'h:' || {finished} || ':finished', {sign} {from_clause} WHERE {done} "
        f"UNION ALL SELECT 'h:' || {finished} || ':lag_ms', {sign} * {lag} {from_clause} "
        f"WHERE {done}"
    )


_FUNCTIONS = [
    f"""
CREATE FUNCTION count_event_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO count_deltas (name, delta)
    SELECT name, sum(delta) * (CASE TG_OP WHEN 'DELETE' THEN -1 ELSE 1 END)
    FROM ({_contributions("", "1", "FROM changed_rows")}) AS c
    GROUP BY name HAVING sum(delta) <> 0;
    RETURN NULL;
END $$""",
    f"""
CREATE FUNCTION count_event_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO count_deltas (name, delta)
    SELECT name, sum(delta) FROM (
        {_contributions("NEW.", "1")} UNION ALL {_contributions("OLD.", "-1")}
    ) AS c
    GROUP BY name HAVING sum(delta) <> 0;
    RETURN NULL;
END $$""",
    """
CREATE FUNCTION count_registration_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO count_deltas (name, delta) VALUES ('registration_status:' || OLD.status, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO count_deltas (name, delta) VALUES ('registration_status:' || NEW.status, 1);
    END IF;
    RETURN NULL;
END $$""",
]

_EVENT_CHANGED = " OR ".join(
    f"OLD.{column} IS DISTINCT FROM NEW.{column}"
    for column in ("state", "received_at", "processed_at")
)
"""When an event's counts change."""

_TRIGGERS = [
    "CREATE TRIGGER count_events_insert AFTER INSERT ON callback_events "
    "REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION count_event_statement()",
    "CREATE TRIGGER count_events_delete AFTER DELETE ON callback_events "
    "REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION count_event_statement()",
    "CREATE TRIGGER count_events_update AFTER UPDATE OF state, received_at, processed_at "
    f"ON callback_events FOR EACH ROW WHEN ({_EVENT_CHANGED}) "
    "EXECUTE FUNCTION count_event_update()",
    "CREATE TRIGGER count_registrations_insert AFTER INSERT ON registrations "
    "FOR EACH ROW EXECUTE FUNCTION count_registration_row()",
    "CREATE TRIGGER count_registrations_update AFTER UPDATE OF status ON registrations "
    "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) "
    "EXECUTE FUNCTION count_registration_row()",
    "CREATE TRIGGER count_registrations_delete AFTER DELETE ON registrations "
    "FOR EACH ROW EXECUTE FUNCTION count_registration_row()",
]

_TRIGGER_NAMES = {
    "count_events_insert": "callback_events",
    "count_events_delete": "callback_events",
    "count_events_update": "callback_events",
    "count_registrations_insert": "registrations",
    "count_registrations_update": "registrations",
    "count_registrations_delete": "registrations",
}


def _backfill() -> str:
    """Every row counted as the triggers count it, summed per name."""
    events = _contributions("", "1", "FROM callback_events")
    return (
        "INSERT INTO count_totals (name, value) SELECT name, sum(delta) FROM ("
        f"{events} UNION ALL "
        "SELECT 'registration_status:' || status, 1 FROM registrations"
        ") AS c GROUP BY name HAVING sum(delta) <> 0"
    )


def _execute(statement: str) -> None:
    # sa.text() reads `:name` as a bind parameter: the colons opening the count names' suffixes
    # (`':received'`) are escaped for it.
    op.execute(sa.text(statement.replace("':", "'\\:")))


def upgrade() -> None:
    op.create_table(
        "count_deltas",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_count_deltas")),
    )
    op.create_table(
        "count_totals",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_count_totals")),
    )
    # The console's and the API's `outcome` filter on events (only finished events have one).
    op.create_index(
        "ix_callback_events_outcome_id",
        "callback_events",
        ["outcome", "id"],
        postgresql_where=sa.text("outcome IS NOT NULL"),
    )
    # Registrations waiting in a state, oldest first (the console's "waiting on the customer").
    op.create_index(
        "ix_registrations_status_status_since_id",
        "registrations",
        ["status", "status_since", "id"],
    )
    for statement in [*_FUNCTIONS, *_TRIGGERS]:
        _execute(statement)
    _execute(_backfill())


def downgrade() -> None:
    for trigger, table in _TRIGGER_NAMES.items():
        op.execute(sa.text(f"DROP TRIGGER IF EXISTS {trigger} ON {table}"))
    for function in ("count_event_statement", "count_event_update", "count_registration_row"):
        op.execute(sa.text(f"DROP FUNCTION IF EXISTS {function}()"))
    op.drop_index("ix_registrations_status_status_since_id", table_name="registrations")
    op.drop_index("ix_callback_events_outcome_id", table_name="callback_events")
    op.drop_table("count_totals")
    op.drop_table("count_deltas")
