"""The steps of processing one kept callback event. Each runs inside the caller's transaction.

The worker's task strings them together (app/worker/tasks.py): `begin` decides and, when it can,
finishes the event at once; when the event must be checked, the task GETs the registration outside
any transaction and hands the answer to `finish_with_snapshot`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks.parsing import parse_callback
from app.models import CallbackEvent, EventState, HistorySource
from app.registrations import repository
from app.registrations.decision import Action, Decision, EventFacts, LocalFacts, decide
from app.registrations.service import apply_event, apply_snapshot
from app.sinch.schemas import SinchRegistration, parse_sinch_time

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


async def begin(session: AsyncSession, row_id: int, *, now: datetime) -> Step:
    """Decide what event `row_id` needs; apply or ignore it now when no GET is needed.

    An event that is not `received` (already processed, or gone) is left as it is: processing the
    same event twice changes nothing the second time.
    """
    event = await lock_event(session, row_id)
    if event is None:
        return Finished(outcome="missing")
    if event.state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    event.attempts += 1

    fields = parse_callback(event.body)
    if not fields.is_json_object:
        event.last_error = "the body is not a JSON object"
        return _finish(event, EventState.INVALID, "invalid:not_json", now)
    if fields.registration_id is None:
        event.last_error = "the body names no registration (resourceId, registrationId or id)"
        return _finish(event, EventState.INVALID, "invalid:no_registration_id", now)

    registration = await repository.lock(session, fields.registration_id)
    local = (
        LocalFacts(
            status=registration.status,
            status_changed_at=registration.status_changed_at,
            last_synced_at=registration.last_synced_at,
            synced_update_time=parse_sinch_time((registration.sinch or {}).get("updateTime")),
        )
        if registration is not None
        else None
    )
    decision = decide(EventFacts(status=fields.status, at=fields.event_time), local)
    if decision.action is Action.CHECK:
        return MustCheck(registration_id=fields.registration_id, decision=decision)
    if decision.action is Action.APPLY:
        assert registration is not None
        assert fields.status is not None
        assert fields.event_time is not None
        apply_event(
            session,
            registration,
            status=fields.status,
            at=fields.event_time,
            event_id=event.dedup_key,
            now=now,
        )
    event.last_error = None
    return _finish(event, EventState.PROCESSED, decision.outcome, now)


async def finish_with_snapshot(
    session: AsyncSession,
    row_id: int,
    snapshot: SinchRegistration,
    decision: Decision,
    *,
    now: datetime,
) -> Finished:
    """Apply the registration fetched to check event `row_id` and mark the event processed.

    The snapshot is applied even if another process finished the event meanwhile: it is Sinch's
    truth, and the recency guard keeps it from overwriting anything newer.
    """
    event = await lock_event(session, row_id)
    event_id = event.dedup_key if event is not None else None
    await apply_snapshot(
        session, snapshot, source=HistorySource.REFETCH, event_id=event_id, now=now
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
