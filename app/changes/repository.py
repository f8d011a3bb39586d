"""The one module that writes `registration_changes`: recording a change, numbering, pruning.
Nothing here commits: callers own the transaction.

Recording: a change is written by the transaction that makes it (a trusted callback's move, a
snapshot that changes the status or a fact, a market filled in), as a copy of the registration's
row after the change (`IMAGE_COLUMNS`): the answer as of that change, whatever happens next.

Numbering: `seq` is NOT taken while recording. Two transactions that took 10 and 11 could commit
as 11 then 10, and a reader given 11 would never see 10. Instead the sequencer (`number`) numbers,
in one statement under one lock, the rows that are committed and still unnumbered: a row becomes
numbered only once it is visible, and every number given is above every number given before. So
a reader that has seen `seq` N can never find a change below N appear later: `seq` is the order in
which changes became visible. Numbers are contiguous from 1 (no gaps), which lets a reader tell a
cursor older than what is kept (pruned) from one that is merely behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Insert,
    String,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.changes import outbox
from app.core.db import rowcount, utcnow
from app.core.models import (
    DELIVERIES,
    FACT_COLUMNS,
    REGISTRATION_CHANGES,
    REGISTRATIONS,
    DeliveryState,
)

IMAGE_COLUMNS: Final = (
    "registration_type",
    "status_changed_at",
    "last_synced_at",
    "created_at",
    "updated_at",
    "status_since",
    *FACT_COLUMNS,
)
"""The registration's columns a change copies (all its answer but `sinch`; the status is the
change's own `status`)."""

NUMBER_BATCH: Final = 2_000
"""The most rows one numbering run takes (the rest wait for the next, in order). Each brings its
deliveries, one per subscriber: a batch bounds how long one run holds the lock."""
NUMBERING_LOCK: Final = 0x5EC0_C4A9
"""The advisory lock key held while numbering."""


def record_from(
    rows: FromClause,
    *,
    kind: ColumnElement[Any],
    from_status: ColumnElement[Any],
    at: ColumnElement[Any],
    source: ColumnElement[Any],
    now: ColumnElement[Any],
) -> Insert:
    """An INSERT of one change per row of `rows`, which has the registration's `id`,
    `project_id`, `status` and `IMAGE_COLUMNS` (the registrations table itself, or a CTE returning
    them): a change belongs to its registration's project."""
    return insert(REGISTRATION_CHANGES).from_select(
        [
            "registration_id",
            "project_id",
            "kind",
            "from_status",
            "status",
            "at",
            "source",
            "recorded_at",
            *IMAGE_COLUMNS,
        ],
        select(
            rows.c.id,
            rows.c.project_id,
            kind,
            from_status,
            rows.c.status,
            at,
            source,
            now,
            *(rows.c[name] for name in IMAGE_COLUMNS),
        ),
    )


# Built once, values bound at each run: building these statements (a subquery's column proxies,
# the outbox's join) cost more CPU than the database spent running them.
_RECORDED_AT = REGISTRATION_CHANGES.c.recorded_at.type
_NOW = bindparam("now", type_=_RECORDED_AT)

_RECORD = record_from(
    select(REGISTRATIONS)
    .where(REGISTRATIONS.c.id.in_(bindparam("registration_ids", expanding=True)))
    .subquery(),
    kind=bindparam("kind", type_=String()),
    from_status=bindparam("from_status", type_=String()),
    at=bindparam("at", type_=REGISTRATION_CHANGES.c.at.type),
    source=bindparam("source", type_=String()),
    now=_NOW,
)


async def record(
    session: AsyncSession,
    registration_ids: Sequence[str],
    *,
    kind: str,
    from_status: str | None,
    at: datetime,
    source: str,
    now: datetime,
) -> None:
    """Record a change of each of `registration_ids` as its row now stands in this transaction
    (pending ORM changes are flushed first). Its deliveries come when it is numbered."""
    values = {
        "registration_ids": list(registration_ids),
        "kind": kind,
        "from_status": from_status,
        "at": at,
        "source": source,
        "now": now,
    }
    await session.execute(_RECORD, values)


# The numbering, and the deliveries of each change numbered (the outbox), in one statement: a
# change is numbered if and only if its deliveries are written, one for each subscription enabled
# then that its filters let through. A subscription is thus a reader of the feed from its creation
# on: it gets the changes that reach the feed while it is enabled. The changes' own transactions
# (a callback's apply above all) write no delivery, so that a subscriber more costs them nothing:
# with 8 subscribers, their 8 rows and index entries were most of a trusted apply's time
# (bench/README.md). One statement fans out every change that one numbering takes.
_NUMBERED = (
    text(
        """
        UPDATE registration_changes SET seq = next_numbers.base + next_numbers.position
        FROM (
            SELECT id,
                   row_number() OVER (ORDER BY id) AS position,
                   (SELECT coalesce(max(seq), 0) FROM registration_changes) AS base
            FROM registration_changes
            WHERE seq IS NULL
            ORDER BY id
            LIMIT :batch
        ) AS next_numbers
        WHERE registration_changes.id = next_numbers.id
        RETURNING registration_changes.id, registration_changes.registration_id,
                  registration_changes.project_id, registration_changes.status,
                  registration_changes.registration_type, registration_changes.kind
        """
    )
    .columns(
        REGISTRATION_CHANGES.c.id,
        REGISTRATION_CHANGES.c.registration_id,
        REGISTRATION_CHANGES.c.project_id,
        REGISTRATION_CHANGES.c.status,
        REGISTRATION_CHANGES.c.registration_type,
        REGISTRATION_CHANGES.c.kind,
    )
    .cte("numbered")
)
_NUMBER = (
    select(func.count())
    .select_from(_NUMBERED)
    .add_cte(outbox.deliveries_for(_NUMBERED, _NOW).cte("fanned_out"))
)


async def number(session: AsyncSession) -> int:
    """Number the committed changes still without a `seq`, in id order after the highest number
    given (see the module docstring). Answers how many were numbered. Commit promptly: the
    numbering lock is held until the transaction ends."""
    await session.execute(select(func.pg_advisory_xact_lock(NUMBERING_LOCK)))
    numbered = await session.scalar(_NUMBER, {"batch": NUMBER_BATCH, "now": utcnow()})
    return int(numbered or 0)


def pruned_through(recorded_before: datetime) -> Any:
    """The newest `seq` recorded before the cutoff: `prune` deletes no change above it."""
    return (
        select(func.max(REGISTRATION_CHANGES.c.seq))
        .where(REGISTRATION_CHANGES.c.recorded_at < recorded_before)
        .scalar_subquery()
    )


_OWED_CHANGE = REGISTRATION_CHANGES.alias("owed_change")
_OWED = (
    select(func.min(_OWED_CHANGE.c.seq))
    .select_from(DELIVERIES.join(_OWED_CHANGE, _OWED_CHANGE.c.id == DELIVERIES.c.change_id))
    .where(DELIVERIES.c.state == literal(DeliveryState.PENDING.value, literal_execute=True))
    .correlate(None)
    .scalar_subquery()
)
"""The oldest change a delivery is still pending for: deleting it would delete the delivery
(its foreign key cascades), so `prune` stops below it."""


async def prune(session: AsyncSession, *, recorded_before: datetime, limit: int) -> int:
    """Delete up to `limit` of the oldest changes, up to the newest one recorded before the cutoff:
    always a prefix of the feed (a reader is either before it, and told so, or after it, never
    in a hole), never the newest change (it carries the numbering on), and never a change a
    delivery is still pending for, nor any after it (a pending delivery is never lost; a disabled
    subscription's are given up first: app.changes.outbox.give_up_unsent). Answers how
    many."""
    newest = select(func.max(REGISTRATION_CHANGES.c.seq)).scalar_subquery()
    doomed = (
        select(REGISTRATION_CHANGES.c.id)
        .where(
            REGISTRATION_CHANGES.c.seq.is_not(None),
            REGISTRATION_CHANGES.c.seq <= pruned_through(recorded_before),
            REGISTRATION_CHANGES.c.seq < newest,
            REGISTRATION_CHANGES.c.seq < func.coalesce(_OWED, newest),
        )
        .order_by(REGISTRATION_CHANGES.c.seq)
        .limit(limit)
        .scalar_subquery()
    )
    result = await session.execute(
        delete(REGISTRATION_CHANGES).where(REGISTRATION_CHANGES.c.id.in_(doomed))
    )
    return rowcount(result)
