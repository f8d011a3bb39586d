"""The one module that writes `callback_events` (the inbox): keeping callbacks, marking them
processed, failed or invalid, replaying and pruning them. Nothing here commits: callers own the
transaction. The internal API's reads are in `queries.py`.

Each write is a Core statement defined once. The worker's first step (app/events/processing.py)
sends them compiled for asyncpg (`DriverStatement`); the later steps run them through SQLAlchemy.
Parameters: p_row (the event's id), p_state, p_outcome, p_error, p_now.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    String,
    any_,
    bindparam,
    delete,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.db import UTCDateTime, rowcount
from app.core.models import CALLBACK_EVENTS, REGISTRATIONS, CallbackEvent, EventState
from app.projects.queries import within
from app.tokens.principal import Visible

_ROW: BindParameter[int] = bindparam("p_row", type_=BigInteger())
_NOW = bindparam("p_now", type_=UTCDateTime())

# --- the worker's statements ---------------------------------------------------------------------

# What the decision needs: the event and its registration, in one round trip. An inner join: an
# event whose registration is not known here (or that names none) is read by READ_EVENT instead.
# A registration of another project is not the event's: the join is within the event's project.
# Read without locks: the write that follows checks that what it rests on is unchanged.
_WITH_REGISTRATION = select(
    CALLBACK_EVENTS.c.state,
    CALLBACK_EVENTS.c.body,
    CALLBACK_EVENTS.c.received_at,
    CALLBACK_EVENTS.c.event_id,
    REGISTRATIONS.c.id,
    REGISTRATIONS.c.status,
    REGISTRATIONS.c.status_changed_at,
    REGISTRATIONS.c.last_synced_at,
    REGISTRATIONS.c.sinch["updateTime"].as_string(),
    CALLBACK_EVENTS.c.project_id,
).join_from(
    CALLBACK_EVENTS,
    REGISTRATIONS,
    (REGISTRATIONS.c.id == CALLBACK_EVENTS.c.registration_id)
    & (REGISTRATIONS.c.project_id == CALLBACK_EVENTS.c.project_id),
)
READ_WITH_REGISTRATION = _WITH_REGISTRATION.where(CALLBACK_EVENTS.c.id == _ROW)
# The same for the events of a batch, each row with the event's id last: one round trip for all.
READ_MANY_WITH_REGISTRATION = _WITH_REGISTRATION.add_columns(CALLBACK_EVENTS.c.id).where(
    CALLBACK_EVENTS.c.id == any_(bindparam("p_rows", type_=postgresql.ARRAY(BigInteger())))
)
READ_EVENT = select(
    CALLBACK_EVENTS.c.state,
    CALLBACK_EVENTS.c.body,
    CALLBACK_EVENTS.c.received_at,
    CALLBACK_EVENTS.c.project_id,
).where(CALLBACK_EVENTS.c.id == _ROW)

COUNT_TRY = (
    update(CALLBACK_EVENTS)
    .where(CALLBACK_EVENTS.c.id == _ROW)
    .values(attempts=CALLBACK_EVENTS.c.attempts + 1)
)
# An event is finished once, from `received` only: a second finish (another worker, a replay race)
# changes nothing.
FINISH = (
    update(CALLBACK_EVENTS)
    .where(CALLBACK_EVENTS.c.id == _ROW, CALLBACK_EVENTS.c.state == EventState.RECEIVED.value)
    .values(
        attempts=CALLBACK_EVENTS.c.attempts + 1,
        state=bindparam("p_state", type_=String()),
        outcome=bindparam("p_outcome", type_=String()),
        processed_at=_NOW,
        last_error=bindparam("p_error", type_=String()),
    )
)
# The same, for an event whose try was already counted (by COUNT_TRY before its GET).
FINISH_CHECKED = FINISH.values(attempts=CALLBACK_EVENTS.c.attempts)


def finish_params(
    row_id: int, state: EventState, outcome: str, now: datetime, error: str | None = None
) -> dict[str, Any]:
    return {
        "p_row": row_id,
        "p_state": state.value,
        "p_outcome": outcome,
        "p_now": now,
        "p_error": error[:MAX_ERROR_LENGTH] if error is not None else None,
    }


MAX_ERROR_LENGTH = 2000


async def lock_event(session: AsyncSession, row_id: int) -> CallbackEvent | None:
    """The event, locked until the transaction ends; None if it is not kept."""
    # populate_existing: the SELECT is always sent (it takes the lock), and refreshes the object.
    return await session.get(CallbackEvent, row_id, with_for_update=True, populate_existing=True)


async def note_error(session: AsyncSession, row_id: int, error: str) -> None:
    """Record the error of a try that will be retried; the event stays `received`."""
    await session.execute(
        update(CALLBACK_EVENTS)
        .where(CALLBACK_EVENTS.c.id == row_id, CALLBACK_EVENTS.c.state == EventState.RECEIVED)
        .values(last_error=error[:MAX_ERROR_LENGTH])
    )


async def reset_for_replay(session: AsyncSession, row_id: int) -> bool:
    """Put event `row_id` back to `received` so it is processed again. False if it is unknown."""
    result = await session.execute(
        update(CALLBACK_EVENTS)
        .where(CALLBACK_EVENTS.c.id == row_id)
        .values(state=EventState.RECEIVED, outcome=None, processed_at=None)
    )
    return rowcount(result) > 0


# --- the sweep, replay and retention -------------------------------------------------------------


async def received_before(session: AsyncSession, cutoff: datetime, limit: int) -> list[int]:
    """Ids of events still `received` that arrived before `cutoff`, oldest first."""
    result = await session.execute(
        select(CallbackEvent.id)
        .where(CallbackEvent.state == EventState.RECEIVED, CallbackEvent.received_at < cutoff)
        .order_by(CallbackEvent.received_at, CallbackEvent.id)
        .limit(limit)
    )
    return list(result.scalars())


async def ids_in_state(
    session: AsyncSession, state: EventState, visible: Visible = None
) -> list[int]:
    """The ids of the events in `state`, of `visible`'s projects (None: every project)."""
    statement = select(CallbackEvent.id).where(CallbackEvent.state == state)
    result = await session.execute(
        within(statement, CallbackEvent.project_id, visible).order_by(CallbackEvent.id)
    )
    return list(result.scalars())


async def prune(
    session: AsyncSession, *, processed_before: datetime, states: tuple[EventState, ...], limit: int
) -> int:
    """Delete up to `limit` events in `states` processed before the cutoff; answers how many."""
    doomed = (
        select(CallbackEvent.id)
        .where(CallbackEvent.state.in_(states), CallbackEvent.processed_at < processed_before)
        .limit(limit)
        .scalar_subquery()
    )
    result = await session.execute(delete(CallbackEvent).where(CallbackEvent.id.in_(doomed)))
    return rowcount(result)


# --- the inbox: keeping verified callbacks -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewCallback:
    """A verified callback, ready to be kept."""

    project_id: str
    """The project whose route and secrets received it: its dedup keys are that project's."""
    dedup_key: str
    event_id: str | None
    registration_id: str | None
    body: bytes
    headers: dict[str, str]
    peer: str | None
    secret_index: int
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Stored:
    """What keeping a callback did: a new row (its id), or a count on an existing one."""

    row_id: int | None

    @property
    def duplicate(self) -> bool:
        return self.row_id is None


async def store_callbacks(
    connection: AsyncConnection, callbacks: Sequence[NewCallback]
) -> list[Stored]:
    """Keep `callbacks` in one statement; answer one `Stored` per callback, in order.

    A callback whose dedup key is already kept for its project (by an earlier transaction, or
    earlier in this same batch) is a duplicate: no row is added and the kept row's
    `duplicate_count` grows instead.
    """
    first, seen = _distinct(callbacks)
    statement = (
        postgresql.insert(CALLBACK_EVENTS)
        .on_conflict_do_nothing(
            index_elements=[CALLBACK_EVENTS.c.project_id, CALLBACK_EVENTS.c.dedup_key]
        )
        .returning(CALLBACK_EVENTS.c.id, CALLBACK_EVENTS.c.project_id, CALLBACK_EVENTS.c.dedup_key)
    )
    rows = [
        {
            "project_id": c.project_id,
            "dedup_key": c.dedup_key,
            "event_id": c.event_id,
            "registration_id": c.registration_id,
            "body": c.body,
            "headers": c.headers,
            "peer": c.peer,
            "secret_index": c.secret_index,
            "received_at": c.received_at,
            "state": EventState.RECEIVED,
            "duplicate_count": 0,
        }
        for c in first
    ]
    result = await connection.execute(statement, rows)
    inserted: dict[Key, int] = {(project, key): row_id for row_id, project, key in result.all()}

    bumps = _duplicates(seen, inserted)
    if bumps:
        await connection.execute(
            update(CALLBACK_EVENTS)
            .where(
                CALLBACK_EVENTS.c.project_id == bindparam("project"),
                CALLBACK_EVENTS.c.dedup_key == bindparam("key"),
            )
            .values(duplicate_count=CALLBACK_EVENTS.c.duplicate_count + bindparam("n")),
            [{"project": project, "key": key, "n": n} for (project, key), n in bumps.items()],
        )
    return _answers(callbacks, inserted)


# The endpoint's path: the same two statements as `store_callbacks`, written for asyncpg with one
# array per column (`unnest`, which Core's INSERT does not build), so a batch costs one round trip
# (two with duplicates) and no per-row work in SQLAlchemy. The state is bound ($9), not spelt.
# `store_callbacks` stays for callers inside a SQLAlchemy transaction (tests, bench/worker.py).
_PG_INSERT = """
INSERT INTO callback_events (project_id, dedup_key, event_id, registration_id, body, headers,
                             peer, secret_index, received_at, state, duplicate_count, attempts)
SELECT t.project_id, t.dedup_key, t.event_id, t.registration_id, t.body, t.headers::json, t.peer,
       t.secret_index, t.received_at, $9::varchar, 0, 0
FROM unnest($10::varchar[], $1::varchar[], $2::varchar[], $3::varchar[], $4::bytea[],
            $5::text[], $6::varchar[], $7::smallint[], $8::timestamptz[])
     AS t(project_id, dedup_key, event_id, registration_id, body, headers, peer, secret_index,
          received_at)
ON CONFLICT (project_id, dedup_key) DO NOTHING
RETURNING id, project_id, dedup_key
"""
_PG_BUMP = """
UPDATE callback_events SET duplicate_count = duplicate_count + t.n
FROM unnest($1::varchar[], $2::varchar[], $3::int[]) AS t(p, k, n)
WHERE project_id = t.p AND dedup_key = t.k
"""


async def store_callbacks_asyncpg(
    connection: Any, callbacks: Sequence[NewCallback]
) -> list[Stored]:
    """`store_callbacks` on a raw asyncpg connection outside any transaction: each statement
    commits on its own.

    No transaction is needed: the INSERT is atomic and durable when it returns, and the duplicate
    counts are bumped afterwards. Should that UPDATE fail, this raises and every caller of the
    batch answers 503 although the new rows are kept; Sinch's retry of them is then counted as a
    duplicate. A 200 is never given for a row that is not kept.
    """
    rows, seen = _distinct(callbacks)
    inserted: dict[Key, int] = {
        (project, key): row_id
        for row_id, project, key in await connection.fetch(
            _PG_INSERT,
            [c.dedup_key for c in rows],
            [c.event_id for c in rows],
            [c.registration_id for c in rows],
            [c.body for c in rows],
            [json.dumps(c.headers) for c in rows],
            [c.peer for c in rows],
            [c.secret_index for c in rows],
            [c.received_at for c in rows],
            EventState.RECEIVED.value,
            [c.project_id for c in rows],
        )
    }
    bumps = _duplicates(seen, inserted)
    if bumps:
        await connection.execute(
            _PG_BUMP,
            [project for project, _ in bumps],
            [key for _, key in bumps],
            list(bumps.values()),
        )
    return _answers(callbacks, inserted)


# The dedup arithmetic both inserts share. Pure.

Key = tuple[str, str]
"""A callback's identity: its project and its dedup key."""


def _key(callback: NewCallback) -> Key:
    return callback.project_id, callback.dedup_key


def _distinct(callbacks: Sequence[NewCallback]) -> tuple[list[NewCallback], Counter[Key]]:
    """The first callback of each key, in order, and how many times each key came."""
    first: dict[Key, NewCallback] = {}
    seen = Counter[Key]()
    for callback in callbacks:
        first.setdefault(_key(callback), callback)
        seen[_key(callback)] += 1
    return list(first.values()), seen


def _duplicates(seen: Counter[Key], inserted: dict[Key, int]) -> dict[Key, int]:
    """How much each kept row's `duplicate_count` grows: every arrival but the one inserted."""
    bumps = {key: count - (1 if key in inserted else 0) for key, count in seen.items()}
    return {key: n for key, n in bumps.items() if n > 0}


def _answers(callbacks: Sequence[NewCallback], inserted: dict[Key, int]) -> list[Stored]:
    """One answer per callback, in order: the new row for the first of its key, else duplicate."""
    rows = dict(inserted)
    return [Stored(row_id=rows.pop(_key(callback), None)) for callback in callbacks]
