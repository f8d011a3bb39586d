"""The steps of processing one kept callback event.

The worker's task strings them together (app/worker/tasks.py): `begin` decides and, when it can,
finishes the event at once; when the event must be checked, the task GETs the registration outside
any transaction and hands the answer to `finish_with_snapshot`. On PostgreSQL the task first tries
`try_begin`: the same step without locks, whose one write checks that nothing it read has changed.

Every write goes through the module that owns its table: `app.events.repository` for the event,
`app.registrations.repository` for the registration and its history. Both ways run the same
statement definitions; `try_begin` sends them compiled for asyncpg (`DriverStatement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.db import DriverStatement, changed_rows
from app.core.models import CALLBACK_EVENTS, EventState, HistorySource
from app.events import repository as events
from app.events.parsing import CallbackFields, parse_callback
from app.registrations import repository as registrations
from app.registrations.decision import Action, Decision, EventFacts, LocalFacts, decide
from app.registrations.facts import FACT_STATES
from app.registrations.service import apply_snapshot
from app.sinch.schemas import SinchRegistration


@dataclass(frozen=True, slots=True)
class Finished:
    """Nothing more to do: `outcome` is recorded on the event (or it was done already)."""

    outcome: str
    received_at: datetime | None = None
    facts_due: str | None = None
    """A registration the event moved into one of `FACT_STATES`: fetch it for its facts (after
    the commit; `registrations.facts_due_at` records the need in the same transaction)."""


@dataclass(frozen=True, slots=True)
class MustCheck:
    """The event must be checked: GET `registration_id` from Sinch, then `finish_with_snapshot`."""

    registration_id: str
    decision: Decision


Step = Finished | MustCheck

# A trusted event on PostgreSQL: its five writes in ONE statement (data-modifying CTEs). The event
# row is locked for the statement and must still be `received`; the registration moves only if it
# is still as read (the guard of MOVE_BY_CALLBACK); a history row, the change feed's row and its
# deliveries follow the move; the event is finished only if the registration moved. Under the
# locked way the guards always hold.
_STILL_RECEIVED = (
    select(CALLBACK_EVENTS.c.id)
    .where(
        CALLBACK_EVENTS.c.id == bindparam("p_row"),
        CALLBACK_EVENTS.c.state == EventState.RECEIVED.value,
    )
    .with_for_update()
    .cte("event")
)
_MOVED, _HISTORY, _CHANGE, _DELIVERIES = registrations.callback_writes_as_ctes(
    exists(select(_STILL_RECEIVED.c.id))
)
APPLY_IN_ONE = (
    events.FINISH.where(exists(select(_MOVED.c.id)))
    .add_cte(_STILL_RECEIVED)
    .add_cte(_MOVED)
    .add_cte(_HISTORY)
    .add_cte(_CHANGE)
    .add_cte(_DELIVERIES)
)
_LOCK_WITH_REGISTRATION = events.READ_WITH_REGISTRATION.with_for_update()
_LOCK_EVENT = events.READ_EVENT.with_for_update()

# The lock-free way's statements: the same definitions, compiled for asyncpg once.
_DRIVER_READ = DriverStatement(events.READ_WITH_REGISTRATION)
_DRIVER_COUNT_TRY = DriverStatement(events.COUNT_TRY)
_DRIVER_FINISH = DriverStatement(events.FINISH)
_DRIVER_APPLY = DriverStatement(APPLY_IN_ONE)


def judge(
    body: bytes, local: LocalFacts | None, *, now: datetime, skew: timedelta
) -> tuple[CallbackFields, Decision]:
    """What the kept `body` says, and the decision about it given what is known here at `now`."""
    fields = parse_callback(body)
    event = EventFacts(status=fields.status, at=fields.event_time)
    return fields, decide(event, local, now=now, skew=skew)


def _apply_params(
    row_id: int, decision: Decision, fields: CallbackFields, read: Any, now: datetime
) -> dict[str, Any]:
    """The parameters of a trusted event's writes; `read` is the READ_WITH_REGISTRATION row."""
    _, _, _, sinch_event_id, registration_id, status, changed_at, synced_at, _ = read
    return {
        **events.finish_params(row_id, EventState.PROCESSED, decision.outcome, now),
        "p_registration": registration_id,
        "p_from": status,
        "p_read_at": changed_at,
        "p_read_synced": synced_at,
        "p_to": fields.status,
        "p_at": fields.event_time,
        "p_event": sinch_event_id,
        "p_comment": fields.comments,
        "p_facts_due": now if fields.status in FACT_STATES else None,
    }


def _applied(decision: Decision, fields: CallbackFields, read: Any, received_at: Any) -> Finished:
    registration_id = read[4]
    due = registration_id if fields.status in FACT_STATES else None
    return Finished(outcome=decision.outcome, received_at=received_at, facts_due=due)


def _local(read: Any) -> LocalFacts:
    _, _, _, _, _, status, changed_at, synced_at, update_time = read
    return LocalFacts.of(status, changed_at, synced_at, update_time)


async def begin(
    connection: AsyncConnection, row_id: int, *, now: datetime, skew: timedelta
) -> Step:
    """Decide what event `row_id` needs; apply or ignore it now when no GET is needed.

    Core on a plain connection, not the ORM: this is the worker's hot path. The event's row and its
    registration's row stay locked until the caller's transaction ends. An event that is not
    `received` (already processed, or gone) is left as it is: processing the same event twice
    changes nothing the second time.
    """
    read = (await connection.execute(_LOCK_WITH_REGISTRATION, {"p_row": row_id})).first()
    if read is None:
        return await _begin_unknown(connection, row_id, now, skew)
    state, body, received_at = read[0], read[1], read[2]
    if state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    fields, decision = judge(body, _local(read), now=now, skew=skew)
    if decision.action is Action.CHECK:
        await connection.execute(events.COUNT_TRY, {"p_row": row_id})
        return MustCheck(registration_id=read[4], decision=decision)
    if decision.action is Action.IGNORE:
        params = events.finish_params(row_id, EventState.PROCESSED, decision.outcome, now)
        await connection.execute(events.FINISH, params)
        return Finished(outcome=decision.outcome, received_at=received_at)
    await connection.execute(APPLY_IN_ONE, _apply_params(row_id, decision, fields, read, now))
    return _applied(decision, fields, read, received_at)


async def try_begin(driver: Any, row_id: int, *, now: datetime, skew: timedelta) -> Step | None:
    """`begin` without locks, on the asyncpg connection `driver` in autocommit (PostgreSQL).

    Reads without locks, decides, then writes in one statement that first checks that nothing the
    decision rests on has changed: the event is still `received` and the registration still has
    the status, `statusChangedAt` and `lastSyncedAt` that were read. None when this way cannot
    settle the event (its registration is not known here, or something changed): the caller then
    runs `begin`, which decides again on locked rows.
    """
    read = await _DRIVER_READ.fetchrow(driver, {"p_row": row_id})
    if read is None:
        return None
    state, body, received_at = read[0], read[1], read[2]
    if state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    fields, decision = judge(body, _local(read), now=now, skew=skew)
    if decision.action is Action.CHECK:
        await _DRIVER_COUNT_TRY.execute(driver, {"p_row": row_id})
        return MustCheck(registration_id=read[4], decision=decision)
    if decision.action is Action.IGNORE:
        params = events.finish_params(row_id, EventState.PROCESSED, decision.outcome, now)
        if not changed_rows(await _DRIVER_FINISH.execute(driver, params)):
            return Finished(outcome="already_done")
        return Finished(outcome=decision.outcome, received_at=received_at)
    params = _apply_params(row_id, decision, fields, read, now)
    if not changed_rows(await _DRIVER_APPLY.execute(driver, params)):
        return None  # processed meanwhile, or its registration moved: decide again, locked
    return _applied(decision, fields, read, received_at)


async def _begin_unknown(
    connection: AsyncConnection, row_id: int, now: datetime, skew: timedelta
) -> Step:
    """`begin` for an event whose registration is not known here: it is invalid or must be
    checked (a registration we do not know can only be learnt from a GET)."""
    read = (await connection.execute(_LOCK_EVENT, {"p_row": row_id})).first()
    if read is None:
        return Finished(outcome="missing")
    state, body, received_at = read
    if state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    fields, decision = judge(body, None, now=now, skew=skew)
    invalid = None
    if not fields.is_json_object:
        invalid = ("invalid:not_json", "the body is not a JSON object")
    elif fields.registration_id is None:
        invalid = (
            "invalid:no_registration_id",
            "the body names no usable registration (resourceId, registrationId or id)",
        )
    if invalid is not None:
        outcome, error = invalid
        params = events.finish_params(row_id, EventState.INVALID, outcome, now, error)
        await connection.execute(events.FINISH, params)
        return Finished(outcome=outcome, received_at=received_at)
    await connection.execute(events.COUNT_TRY, {"p_row": row_id})
    # Created meanwhile by another process? Then the GET is merely one more than needed.
    assert fields.registration_id is not None
    return MustCheck(registration_id=fields.registration_id, decision=decision)


async def finish_with_snapshot(
    session: AsyncSession,
    row_id: int,
    snapshot: SinchRegistration,
    decision: Decision,
    *,
    fetched_at: datetime,
    now: datetime,
) -> Finished:
    """Apply the registration fetched (the GET began at `fetched_at`) to check event `row_id` and
    mark the event processed.

    The snapshot is applied even if another process finished the event meanwhile: it is Sinch's
    truth, and the recency rule keeps it from overwriting anything newer.
    """
    event = await events.lock_event(session, row_id)
    await apply_snapshot(
        session,
        snapshot,
        source=HistorySource.REFETCH,
        event_id=event.event_id if event is not None else None,
        fetched_at=fetched_at,
        now=now,
    )
    if event is None or event.state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    params = events.finish_params(row_id, EventState.PROCESSED, decision.outcome, now)
    await session.execute(events.FINISH_CHECKED, params)
    return Finished(outcome=decision.outcome, received_at=event.received_at)


async def give_up(
    session: AsyncSession,
    row_id: int,
    *,
    state: EventState,
    outcome: str,
    error: str,
    now: datetime,
) -> Finished:
    """Mark event `row_id` `failed` (replayable) or `invalid` with the error that decided it."""
    event = await events.lock_event(session, row_id)
    if event is None or event.state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    await session.execute(
        events.FINISH_CHECKED, events.finish_params(row_id, state, outcome, now, error)
    )
    return Finished(outcome=outcome, received_at=event.received_at)
