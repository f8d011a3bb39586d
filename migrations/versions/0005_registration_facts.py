"""registration facts: sender IDs, market, policy, tags, eta, price, status since, reason

Adds the facts internal services ask by (app/registrations/facts.py) as columns of `registrations`,
the lookup tables `registration_sender_ids` and `registration_tags`, the policy-to-market map
`market_policies` (and its `sync_state` mark, which orders map refreshes and lookups), then fills
the facts from the documents already kept.

The new columns are nullable or have a constant default, so adding them changes the catalogue
only; that DDL commits first. The two new indexes of `registrations` are then built CONCURRENTLY,
and the backfill runs in batches of `BATCH` registrations, each committed on its own (no
table-wide lock is held for more than the ALTER). Processes of the previous version must be stopped
first (README, Deploying): they would write registrations without their facts while it runs. The
backfill can be run again over rows it filled (lookup rows already there are kept).

`statusSince` comes from the history (the time of the newest change, when it led to the current
status; else `status_changed_at`). Markets come from documents' own `marketCode` only: the map is
empty until the worker loads it, and then fills the rest.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.core.db
from app.registrations.facts import fact_columns, read_facts

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500
_TIME = app.core.db.UTCDateTime(timezone=True)
_NEW_INDEXES = (
    ("ix_registrations_market_code_id", ("market_code", "id")),
    ("ix_registrations_facts_due_at", ("facts_due_at",)),
)


def upgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(sa.Column("sender_ids", sa.JSON(), server_default="[]", nullable=False))
        batch.add_column(sa.Column("tags", sa.JSON(), server_default="[]", nullable=False))
        batch.add_column(sa.Column("market_code", sa.String(16), nullable=True))
        batch.add_column(sa.Column("policy_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("eta_date", sa.Date(), nullable=True))
        batch.add_column(sa.Column("price", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("status_since", _TIME, nullable=True))
        batch.add_column(sa.Column("reason_message", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reason_state", sa.String(64), nullable=True))
        batch.add_column(sa.Column("reason_at", _TIME, nullable=True))
        batch.add_column(sa.Column("facts_due_at", _TIME, nullable=True))
    for table, column in (("registration_sender_ids", "sender_id"), ("registration_tags", "tag")):
        op.create_table(
            table,
            sa.Column("registration_id", sa.String(255), nullable=False),
            sa.Column(column, sa.String(255), nullable=False),
            sa.ForeignKeyConstraint(
                ["registration_id"],
                ["registrations.id"],
                name=f"fk_{table}_registration_id_registrations",
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("registration_id", column, name=f"pk_{table}"),
        )
        op.create_index(f"ix_{table}_{column}", table, [column, "registration_id"])
    op.create_table(
        "market_policies",
        sa.Column("policy_id", sa.String(255), nullable=False),
        sa.Column("market_code", sa.String(16), nullable=False),
        sa.Column("registration_type", sa.String(64), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("policy_id", name="pk_market_policies"),
    )
    now = datetime.now(UTC)
    op.execute(
        sa.text(
            "INSERT INTO sync_state (name, value, updated_at) VALUES ('market_policies', NULL, :now)"
        ).bindparams(sa.bindparam("now", now, type_=_TIME))
    )

    with op.get_context().autocommit_block():
        for name, columns in _NEW_INDEXES:
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                f"ON registrations ({', '.join(columns)})"
            )
        _backfill(op.get_bind())


def _backfill(connection: sa.Connection) -> None:
    """Fill the facts of every registration, `BATCH` at a time in id order."""
    registrations = sa.table(
        "registrations",
        sa.column("id", sa.String()),
        sa.column("status", sa.String()),
        sa.column("status_changed_at", _TIME),
        sa.column("sinch", sa.JSON()),
        *(
            sa.column(name, type_)
            for name, type_ in (
                ("sender_ids", sa.JSON()),
                ("tags", sa.JSON()),
                ("market_code", sa.String()),
                ("policy_id", sa.String()),
                ("eta_date", sa.Date()),
                ("price", sa.JSON()),
                ("status_since", _TIME),
                ("reason_message", sa.Text()),
                ("reason_state", sa.String()),
                ("reason_at", _TIME),
            )
        ),
    )
    history = sa.table(
        "registration_history",
        sa.column("id", sa.BigInteger()),
        sa.column("registration_id", sa.String()),
        sa.column("to_status", sa.String()),
        sa.column("at", _TIME),
    )
    lookups = {
        "sender_ids": sa.table(
            "registration_sender_ids", sa.column("registration_id"), sa.column("sender_id")
        ),
        "tags": sa.table("registration_tags", sa.column("registration_id"), sa.column("tag")),
    }
    after = ""
    while True:
        rows = connection.execute(
            sa.select(
                registrations.c.id,
                registrations.c.status,
                registrations.c.status_changed_at,
                registrations.c.sinch,
            )
            .where(registrations.c.id > after)
            .order_by(registrations.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        newest: dict[str, Any] = {}
        for change in connection.execute(
            sa.select(history.c.registration_id, history.c.to_status, history.c.at)
            .where(history.c.registration_id.in_([row.id for row in rows]))
            .order_by(history.c.registration_id, history.c.id)
        ):
            newest[change.registration_id] = change
        updates, sender_rows, tag_rows = [], [], []
        for row in rows:
            facts = read_facts(row.sinch)
            change = newest.get(row.id)
            since = (
                change.at
                if change is not None and change.to_status == row.status
                else row.status_changed_at
            )
            columns = {
                "reason_message": None,
                "reason_state": None,
                "reason_at": None,
                **fact_columns(facts, facts.market_code),
            }
            updates.append({"b_id": row.id, "status_since": since, **columns})
            sender_rows += [{"registration_id": row.id, "sender_id": s} for s in facts.sender_ids]
            tag_rows += [{"registration_id": row.id, "tag": t} for t in facts.tags]
        connection.execute(
            registrations.update()
            .where(registrations.c.id == sa.bindparam("b_id"))
            .values({name: sa.bindparam(name) for name in updates[0] if name != "b_id"}),
            updates,
        )
        for name, values in (("sender_ids", sender_rows), ("tags", tag_rows)):
            if values:
                connection.execute(
                    postgresql.insert(lookups[name]).on_conflict_do_nothing(), values
                )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM sync_state WHERE name = 'market_policies'"))
    op.drop_table("market_policies")
    for table, column in (("registration_sender_ids", "sender_id"), ("registration_tags", "tag")):
        op.drop_index(f"ix_{table}_{column}", table_name=table)
        op.drop_table(table)
    with op.batch_alter_table("registrations") as batch:
        for name, _ in _NEW_INDEXES:
            batch.drop_index(name)
        for column in (
            "facts_due_at",
            "reason_at",
            "reason_state",
            "reason_message",
            "status_since",
            "price",
            "eta_date",
            "policy_id",
            "market_code",
            "tags",
            "sender_ids",
        ):
            batch.drop_column(column)
