"""PostgreSQL's fast way to process an event: two statements, no explicit transaction.

`processing.begin` holds the event's and the registration's row locks for a transaction of four
round trips (BEGIN, lock, write, COMMIT), which makes it cost more than arq's own work per job.
Most events are simple (in order, of a known registration), so this reads without locks, decides,
and then writes everything in ONE statement that first checks that nothing the decision rests on
has changed since the read (optimistic concurrency): the event is still `received` (its row is
locked for the statement) and the registration still has the status, `statusChangedAt` and
`lastSyncedAt` that were read. When anything changed, the statement writes nothing and `None`
sends the caller the locked way, which decides again on locked rows.

Same SQL meaning as the Core statements of `processing` and `registrations.repository` (and the
same tests hold both to it: the worker's tests run on both databases, PostgreSQL taking this way).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.events.processing import Finished, MustCheck, Step, judge
from app.models import EventState
from app.registrations.decision import Action, LocalFacts

# The states and the history source are written out ('received', 'processed', 'callback'): they
# are the values of EventState and HistorySource, which the tests read back through the models.
_READ = """
SELECT e.state, e.body, e.received_at, e.dedup_key,
       r.id, r.status, r.status_changed_at, r.last_synced_at, r.sinch ->> 'updateTime'
FROM callback_events AS e JOIN registrations AS r ON r.id = e.registration_id
WHERE e.id = $1
"""
_COUNT_TRY = "UPDATE callback_events SET attempts = attempts + 1 WHERE id = $1"
_IGNORE = """
UPDATE callback_events
SET attempts = attempts + 1, state = 'processed', outcome = $2, processed_at = $3, last_error = NULL
WHERE id = $1 AND state = 'received'
"""
# $4 registration, $5 new status, $6 its time, $7..$9 the registration as read, $10 the event key.
_APPLY = """
WITH event AS (
    SELECT id FROM callback_events
    WHERE id = $1 AND state = 'received'
    FOR UPDATE
), moved AS (
    UPDATE registrations
    SET status = $5::varchar, status_changed_at = $6::timestamptz,
        callback_applied_at = $3::timestamptz, updated_at = $3::timestamptz
    WHERE id = $4::varchar AND status = $7::varchar
      AND status_changed_at IS NOT DISTINCT FROM $8::timestamptz
      AND last_synced_at IS NOT DISTINCT FROM $9::timestamptz
      AND EXISTS (SELECT FROM event)
    RETURNING id
), history AS (
    INSERT INTO registration_history
        (registration_id, from_status, to_status, at, source, event_id, recorded_at)
    SELECT id, $7, $5, $6, 'callback', $10::varchar, $3 FROM moved
)
UPDATE callback_events
SET attempts = attempts + 1, state = 'processed', outcome = $2, processed_at = $3, last_error = NULL
WHERE id = $1 AND EXISTS (SELECT FROM moved)
"""


def _changed(status: str) -> bool:
    """Whether an asyncpg command status (`UPDATE n`) reports a changed row."""
    return not status.endswith(" 0")


async def try_begin(driver: Any, row_id: int, *, now: datetime, skew: timedelta) -> Step | None:
    """`processing.begin` without locks, on the asyncpg connection `driver` in autocommit.

    None when this way cannot settle the event: its registration is not known here, or the
    registration changed between the read and the write. The caller then runs `processing.begin`.
    """
    row = await driver.fetchrow(_READ, row_id)
    if row is None:
        return None
    state, body, received_at, event_key, registration_id, status, changed_at, synced_at, updated = (
        row
    )
    if state != EventState.RECEIVED:
        return Finished(outcome="already_done")
    local = LocalFacts.of(status, changed_at, synced_at, updated)
    fields, decision = judge(body, local, now=now, skew=skew)
    if decision.action is Action.CHECK:
        await driver.execute(_COUNT_TRY, row_id)
        return MustCheck(registration_id=registration_id, decision=decision)
    if decision.action is Action.IGNORE:
        if not _changed(await driver.execute(_IGNORE, row_id, decision.outcome, now)):
            return Finished(outcome="already_done")
        return Finished(outcome=decision.outcome, received_at=received_at)
    done = await driver.execute(
        _APPLY,
        row_id,
        decision.outcome,
        now,
        registration_id,
        fields.status,
        fields.event_time,
        status,
        changed_at,
        synced_at,
        event_key,
    )
    if not _changed(done):
        return None  # processed meanwhile, or its registration moved: decide again, locked
    return Finished(outcome=decision.outcome, received_at=received_at)
