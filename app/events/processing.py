"""The steps of processing one kept callback event.

The worker's task strings them together (app/worker/tasks.py): `begin` decides and, when it can,
finishes the event at once; when the event must be checked, the task GETs the registration outside
any transaction and hands the answer to `finish_with_snapshot`.

`begin` takes no locks (the faster of the two ways measured: docs/architecture.md, "One way to
apply"): it reads the event with its registration, decides, and writes with one statement that
first checks that nothing the decision rests on has changed; when something did, it reads and
decides again. Every write goes through the module that owns its table: `app.events.repository`
for the event, `app.registrations.repository` for the registration, its history and the change
feed's row; `begin` sends those definitions compiled once for asyncpg (`DriverStatement`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import DriverStatement, changed_rows, utcnow
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
    """The event must be checked: GET `registration_id` from Sinch with the credentials of the
    event's project `project_id`, then `finish_with_snapshot`."""

    registration_id: str
    project_id: str
    decision: Decision


Step = Finished | MustCheck

# A trusted event: its four writes in ONE statement (data-modifying CTEs), the one statement of a
# trusted apply. The event row is locked for the statement and must still be `received`; the
# registration moves only if it is still as read (the guard of MOVE_BY_CALLBACK); a history row
# and the change feed's row follow the move; the event is finished only if the registration moved.
# The change's deliveries are not written here but when it is numbered: a subscriber more costs
# this statement nothing (app/changes/repository.py).
_STILL_RECEIVED = (
    select(CALLBACK_EVENTS.c.id)
    .where(
        CALLBACK_EVENTS.c.id == bindparam("p_row"),
        CALLBACK_EVENTS.c.state == EventState.RECEIVED.value,
    )
    .with_for_update()
    .cte("event")
)
_MOVED, _HISTORY, _CHANGE = registrations.callback_writes_as_ctes(
    exists(select(_STILL_RECEIVED.c.id))
)
APPLY_IN_ONE = (
    events.FINISH.where(exists(select(_MOVED.c.id)))
    .add_cte(_STILL_RECEIVED)
    .add_cte(_MOVED)
    .add_cte(_HISTORY)
    .add_cte(_CHANGE)
)

# `begin`'s statements: the owners' definitions, compiled for asyncpg once.
_READ = DriverStatement(events.READ_WITH_REGISTRATION)
_READ_MANY = DriverStatement(events.READ_MANY_WITH_REGISTRATION)
_READ_EVENT = DriverStatement(events.READ_EVENT)
_COUNT_TRY = DriverStatement(events.COUNT_TRY)
_FINISH = DriverStatement(events.FINISH)
_APPLY = DriverStatement(APPLY_IN_ONE)

MAX_ROUNDS = 5
"""Reads and decisions one `begin` makes while other writers keep moving the event's registration
between its read and its write; past them it gives up and the job is tried again later."""


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
    _, _, _, sinch_event_id, registration_id, status, changed_at, synced_at, _, _ = read
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
    _, _, _, _, _, status, changed_at, synced_at, update_time, _ = read
    return LocalFacts.of(status, changed_at, synced_at, update_time)


async def begin(
    driver: Any, row_id: int, *, now: datetime, skew: timedelta, count_try: bool = True
) -> Step | None:
    """Decide what event `row_id` needs; apply or ignore it now when no GET is needed.

    Runs on the asyncpg connection `driver` in autocommit: each statement commits on its own, and
    none holds a lock beyond itself. An event that is not `received` (already processed, or gone)
    is left as it is: processing the same event twice changes nothing the second time. None when
    the event's registration moved between read and write `MAX_ROUNDS` times in a row. A
    `MustCheck` counts a try on the event (its `attempts`) unless `count_try` is False: a batch
    that hands the check to a job of its own leaves the count to that job.
    """
    for _ in range(MAX_ROUNDS):
        step = await _decide_and_write(driver, row_id, now=now, skew=skew, count_try=count_try)
        if step is not None:
            return step
    return None


async def begin_many(
    driver: Any, row_ids: Sequence[int], *, skew: timedelta
) -> AsyncIterator[tuple[int, Step | None]]:
    """`begin` (`count_try=False`) for each of `row_ids` in order, each at its own `utcnow()`,
    with one read for the batch instead of one per event: a worker's CPU and PostgreSQL's both
    go mostly to round trips (bench/README.md, where the worker's CPU goes).

    The batch's read is used only for the first event of each registration: a later event of the
    same registration is read again on its own, since the one before it may have moved it. A
    read that is outdated by another writer meanwhile is what `begin` already copes with (the
    trusted write checks what it rests on, and a failed check reads and decides again).
    """
    rows = await _READ_MANY.fetch(driver, {"p_rows": list(row_ids)})
    reads = {row[-1]: row[:-1] for row in rows}
    seen: set[tuple[str, str]] = set()
    for row_id in row_ids:
        now = utcnow()
        step: Step | None = None
        read = reads.get(row_id)
        if read is not None and (key := (read[9], read[4])) not in seen:
            seen.add(key)
            step = await _decide_and_write(
                driver, row_id, now=now, skew=skew, count_try=False, read=read
            )
        if step is None:  # not read above, or its registration moved since
            step = await begin(driver, row_id, now=now, skew=skew, count_try=False)
        yield row_id, step


async def _decide_and_write(
    driver: Any,
    row_id: int,
    *,
    now: datetime,
    skew: timedelta,
    count_try: bool,
    read: Any = None,
) -> Step | None:
    """One round of `begin`: None when the trusted write found its registration changed. `read`
    is the event's READ_WITH_REGISTRATION row when the caller read it already."""
    if read is None:
        read = await _READ.fetchrow(driver, {"p_row": row_id})
    if read is None:
        return await _begin_unknown(driver, row_id, now, skew, count_try)
    state, body, received_at = read[0], read[1], read[2]
    if state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    fields, decision = judge(body, _local(read), now=now, skew=skew)
    if decision.action is Action.CHECK:
        if count_try:
            await _COUNT_TRY.execute(driver, {"p_row": row_id})
        return MustCheck(registration_id=read[4], project_id=read[9], decision=decision)
    if decision.action is Action.IGNORE:
        params = events.finish_params(row_id, EventState.PROCESSED, decision.outcome, now)
        return await _finish(driver, params, received_at)
    params = _apply_params(row_id, decision, fields, read, now)
    if not changed_rows(await _APPLY.execute(driver, params)):
        return None  # processed meanwhile, or its registration moved: read and decide again
    return _applied(decision, fields, read, received_at)


async def _finish(driver: Any, params: dict[str, Any], received_at: datetime) -> Finished:
    """Finish the event as `params` say, unless another process finished it first."""
    if not changed_rows(await _FINISH.execute(driver, params)):
        return Finished(outcome="already_done")
    return Finished(outcome=params["p_outcome"], received_at=received_at)


async def _begin_unknown(
    driver: Any, row_id: int, now: datetime, skew: timedelta, count_try: bool
) -> Step:
    """`begin` for an event whose registration is not known here: it is invalid or must be
    checked (a registration we do not know can only be learnt from a GET)."""
    read = await _READ_EVENT.fetchrow(driver, {"p_row": row_id})
    if read is None:
        return Finished(outcome="missing")
    state, body, received_at, project_id = read
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
        return await _finish(driver, params, received_at)
    if count_try:
        await _COUNT_TRY.execute(driver, {"p_row": row_id})
    # Created meanwhile by another process? Then the GET is merely one more than needed.
    assert fields.registration_id is not None
    return MustCheck(
        registration_id=fields.registration_id, project_id=project_id, decision=decision
    )


async def finish_with_snapshot(
    session: AsyncSession,
    row_id: int,
    snapshot: SinchRegistration,
    decision: Decision,
    *,
    project_id: str,
    fetched_at: datetime,
    now: datetime,
) -> Finished:
    """Apply the registration fetched (the GET began at `fetched_at`, with the credentials of the
    event's project `project_id`) to check event `row_id` and mark the event processed.

    The snapshot is applied even if another process finished the event meanwhile: it is Sinch's
    truth, and the recency rule keeps it from overwriting anything newer.
    """
    event = await events.lock_event(session, row_id)
    await apply_snapshot(
        session,
        snapshot,
        project_id=project_id,
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
