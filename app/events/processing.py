"""The steps of processing one kept callback event. Each runs inside the caller's transaction.

The worker's task strings them together (app/worker/tasks.py): `begin` decides and, when it can,
finishes the event at once; when the event must be checked, the task GETs the registration outside
any transaction and hands the answer to `finish_with_snapshot`. `begin` is the worker's hot path
and runs in Core on a plain connection; the rarer steps use an ORM session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.callbacks.parsing import CallbackFields, parse_callback
from app.models import CALLBACK_EVENTS, REGISTRATIONS, CallbackEvent, EventState, HistorySource
from app.registrations import repository
from app.registrations.decision import Action, Decision, EventFacts, LocalFacts, decide
from app.registrations.service import apply_snapshot
from app.sinch.schemas import SinchRegistration

MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Finished:
    """Nothing more to do: `outcome` is recorded on the event (or it was done already)."""

    outcome: str
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MustCheck:
    """The event must be checked: GET `registration_id` from Sinch, then `finish_with_snapshot`."""

    registration_id: str
    decision: Decision


Step = Finished | MustCheck


async def lock_event(session: AsyncSession, row_id: int) -> CallbackEvent | None:
    result = await session.execute(
        select(CallbackEvent)
        .where(CallbackEvent.id == row_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none()


def _finish(event: CallbackEvent, state: EventState, outcome: str, now: datetime) -> Finished:
    event.state = state
    event.outcome = outcome
    event.processed_at = now
    return Finished(outcome=outcome, received_at=event.received_at)


# The event and its registration, both locked, in one round trip. An inner join: an event whose
# registration is not known here (or that names none) goes the general way, `_begin_unknown`.
_LOCK_WITH_REGISTRATION = (
    select(
        CALLBACK_EVENTS.c.state,
        CALLBACK_EVENTS.c.body,
        CALLBACK_EVENTS.c.received_at,
        CALLBACK_EVENTS.c.dedup_key,
        REGISTRATIONS.c.id,
        REGISTRATIONS.c.status,
        REGISTRATIONS.c.status_changed_at,
        REGISTRATIONS.c.last_synced_at,
        REGISTRATIONS.c.sinch["updateTime"].as_string(),
    )
    .join_from(
        CALLBACK_EVENTS, REGISTRATIONS, REGISTRATIONS.c.id == CALLBACK_EVENTS.c.registration_id
    )
    .where(CALLBACK_EVENTS.c.id == bindparam("p_row"))
    .with_for_update()
)
_COUNT_TRY = (
    update(CALLBACK_EVENTS)
    .where(CALLBACK_EVENTS.c.id == bindparam("p_row"))
    .values(attempts=CALLBACK_EVENTS.c.attempts + 1)
)
_FINISH = _COUNT_TRY.values(
    state=bindparam("p_state"),
    outcome=bindparam("p_outcome"),
    processed_at=bindparam("p_now"),
    last_error=None,
)
# PostgreSQL: a trusted event's three writes in one statement (data-modifying CTEs), so applying
# an event costs two round trips inside its transaction: lock, write.
_APPLY_IN_ONE = _FINISH.add_cte(repository.ADD_CALLBACK_HISTORY.cte("h")).add_cte(
    repository.MOVE_STATUS.cte("r")
)


_FINISH_INVALID = _COUNT_TRY.values(
    state=EventState.INVALID.value,
    outcome=bindparam("p_outcome"),
    processed_at=bindparam("p_now"),
    last_error=bindparam("p_error"),
)
_LOCK_EVENT = (
    select(CALLBACK_EVENTS.c.state, CALLBACK_EVENTS.c.body, CALLBACK_EVENTS.c.received_at)
    .where(CALLBACK_EVENTS.c.id == bindparam("p_row"))
    .with_for_update()
)


def judge(
    body: bytes, local: LocalFacts | None, *, now: datetime, skew: timedelta
) -> tuple[CallbackFields, Decision]:
    """What the kept `body` says, and the decision about it given what is known here at `now`."""
    fields = parse_callback(body)
    event = EventFacts(status=fields.status, at=fields.event_time)
    return fields, decide(event, local, now=now, skew=skew)


async def begin(
    connection: AsyncConnection, row_id: int, *, now: datetime, skew: timedelta
) -> Step:
    """Decide what event `row_id` needs; apply or ignore it now when no GET is needed.

    Core on a plain connection, not the ORM: this is the worker's hot path. The event's row and its
    registration's row stay locked until the caller's transaction ends. An event that is not
    `received` (already processed, or gone) is left as it is: processing the same event twice
    changes nothing the second time.
    """
    row = (await connection.execute(_LOCK_WITH_REGISTRATION, {"p_row": row_id})).first()
    if row is None:
        return await _begin_unknown(connection, row_id, now, skew)
    state, body, received_at, event_id, registration_id, status, changed_at, synced_at, updated = (
        row
    )
    if state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    local = LocalFacts.of(status, changed_at, synced_at, updated)
    fields, decision = judge(body, local, now=now, skew=skew)
    if decision.action is Action.CHECK:
        await connection.execute(_COUNT_TRY, {"p_row": row_id})
        return MustCheck(registration_id=registration_id, decision=decision)
    params: dict[str, Any] = {
        "p_row": row_id,
        "p_state": EventState.PROCESSED.value,
        "p_outcome": decision.outcome,
        "p_now": now,
        "p_registration": registration_id,
        "p_from": status,
        "p_to": fields.status,
        "p_at": fields.event_time,
        "p_event": event_id,
    }
    if decision.action is Action.IGNORE:
        await connection.execute(_FINISH, params)
    elif connection.dialect.name == "postgresql":
        await connection.execute(_APPLY_IN_ONE, params)
    else:  # SQLite runs in-process: three statements cost no more than one
        await connection.execute(repository.ADD_CALLBACK_HISTORY, params)
        await connection.execute(repository.MOVE_STATUS, params)
        await connection.execute(_FINISH, params)
    return Finished(outcome=decision.outcome, received_at=received_at)


async def _begin_unknown(
    connection: AsyncConnection, row_id: int, now: datetime, skew: timedelta
) -> Step:
    """`begin` for an event whose registration is not known here: it is invalid or must be
    checked (a registration we do not know can only be learnt from a GET)."""
    row = (await connection.execute(_LOCK_EVENT, {"p_row": row_id})).first()
    if row is None:
        return Finished(outcome="missing")
    state, body, received_at = row
    if state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    fields, decision = judge(body, None, now=now, skew=skew)
    invalid = None
    if not fields.is_json_object:
        invalid = ("invalid:not_json", "the body is not a JSON object")
    elif fields.registration_id is None:
        invalid = (
            "invalid:no_registration_id",
            "the body names no registration (resourceId, registrationId or id)",
        )
    if invalid is not None:
        outcome, error = invalid
        await connection.execute(
            _FINISH_INVALID,
            {"p_row": row_id, "p_outcome": outcome, "p_now": now, "p_error": error},
        )
        return Finished(outcome=outcome, received_at=received_at)
    await connection.execute(_COUNT_TRY, {"p_row": row_id})
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
    truth, and the recency guard keeps it from overwriting anything newer.
    """
    event = await lock_event(session, row_id)
    event_id = event.dedup_key if event is not None else None
    await apply_snapshot(
        session,
        snapshot,
        source=HistorySource.REFETCH,
        event_id=event_id,
        fetched_at=fetched_at,
        now=now,
    )
    if event is None or event.state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    event.last_error = None
    return _finish(event, EventState.PROCESSED, decision.outcome, now)


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
    event = await lock_event(session, row_id)
    if event is None or event.state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    event.last_error = error[:MAX_ERROR_LENGTH]
    return _finish(event, state, outcome, now)


async def note_error(session: AsyncSession, row_id: int, error: str) -> None:
    """Record the error of a try that will be retried; the event stays `received`."""
    event = await lock_event(session, row_id)
    if event is not None and event.state == EventState.RECEIVED:
        event.last_error = error[:MAX_ERROR_LENGTH]


async def reset_for_replay(session: AsyncSession, row_id: int) -> bool:
    """Put event `row_id` back to `received` so it is processed again. False if it is unknown."""
    event = await lock_event(session, row_id)
    if event is None:
        return False
    event.state = EventState.RECEIVED
    event.outcome = None
    event.processed_at = None
    return True
