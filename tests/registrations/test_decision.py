"""The decision, exhaustively over its cases and with hypothesis over times and states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.registrations.decision import DEFAULT_SKEW, Action, EventFacts, LocalFacts, Reason, decide
from app.registrations.states import State, is_allowed

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
NOW = T0 + 10 * SECOND  # the worker's clock in these cases


def local(
    status: str = "IN_QUEUE",
    at: datetime | None = T0,
    synced: datetime | None = None,
    synced_update: datetime | None = None,
) -> LocalFacts:
    return LocalFacts(
        status=status,
        status_changed_at=at,
        last_synced_at=synced,
        synced_update_time=synced_update,
    )


@pytest.mark.parametrize(
    ("event", "known", "action", "reason"),
    [
        (EventFacts("IN_PROGRESS", T0 + SECOND), local(), Action.APPLY, Reason.TRUSTED),
        (EventFacts("IN_PROGRESS", T0 + SECOND), None, Action.CHECK, Reason.UNKNOWN_REGISTRATION),
        (EventFacts(None, T0 + SECOND), local(), Action.CHECK, Reason.NO_STATE),
        (EventFacts("IN_PROGRESS", None), local(), Action.CHECK, Reason.NO_TIME),
        (EventFacts("SUSPENDED", T0 + SECOND), local(), Action.CHECK, Reason.UNKNOWN_STATE),
        (
            EventFacts("IN_PROGRESS", T0 + SECOND),
            local("APPROVED"),
            Action.CHECK,
            Reason.INVALID_TRANSITION,
        ),
        (
            EventFacts("IN_PROGRESS", T0 + SECOND),
            local("SUSPENDED"),
            Action.CHECK,
            Reason.INVALID_TRANSITION,
        ),
        (EventFacts("IN_QUEUE", T0), local("IN_QUEUE"), Action.IGNORE, Reason.DUPLICATE),
        # Older than what we know, and a GET made after the event already told us the truth.
        (
            EventFacts("IN_PROGRESS", T0 - SECOND),
            local("APPROVED", synced=T0),
            Action.IGNORE,
            Reason.SUPERSEDED,
        ),
        # ... or the document a GET answered is at least as new as the event.
        (
            EventFacts("IN_PROGRESS", T0 - SECOND),
            local("APPROVED", synced=T0 - 5 * SECOND, synced_update=T0),
            Action.IGNORE,
            Reason.SUPERSEDED,
        ),
        # Stamped in the second our GET began: the change may have come just after the GET.
        (
            EventFacts("IN_PROGRESS", T0),
            local("APPROVED", at=T0 + SECOND, synced=T0 + SECOND / 2),
            Action.CHECK,
            Reason.STALE,
        ),
        # ... or in the second of the document's own updateTime.
        (
            EventFacts("IN_PROGRESS", T0),
            local("APPROVED", at=T0 + SECOND, synced_update=T0),
            Action.CHECK,
            Reason.STALE,
        ),
        # Older than what we know, which came from callbacks only: check.
        (EventFacts("IN_PROGRESS", T0 - SECOND), local("APPROVED"), Action.CHECK, Reason.STALE),
        (
            EventFacts("IN_PROGRESS", T0 - SECOND),
            local("APPROVED", synced=T0 - 2 * SECOND),
            Action.CHECK,
            Reason.STALE,
        ),
        # Same time, other state: we cannot tell which came last.
        (EventFacts("IN_PROGRESS", T0), local("PENDING"), Action.CHECK, Reason.STALE),
        # Same state again, later: something may have happened in between.
        (
            EventFacts("IN_QUEUE", T0 + SECOND),
            local("IN_QUEUE"),
            Action.CHECK,
            Reason.INVALID_TRANSITION,
        ),
        # Nothing known about the time of the local state: the event is newer.
        (EventFacts("IN_PROGRESS", T0), local(at=None), Action.APPLY, Reason.TRUSTED),
        # A time ahead of our clock by more than the skew: Sinch's clock, or the event, is wrong.
        (
            EventFacts("IN_PROGRESS", NOW + DEFAULT_SKEW + SECOND),
            local(),
            Action.CHECK,
            Reason.FUTURE_TIME,
        ),
        (
            EventFacts("IN_PROGRESS", NOW.replace(year=2036)),
            None,
            Action.CHECK,
            Reason.FUTURE_TIME,
        ),
        # Ahead, but within the skew: clocks differ a little.
        (EventFacts("IN_PROGRESS", NOW + DEFAULT_SKEW), local(), Action.APPLY, Reason.TRUSTED),
    ],
)
def test_cases(event: EventFacts, known: LocalFacts | None, action: Action, reason: Reason) -> None:
    decision = decide(event, known, now=NOW)
    assert (decision.action, decision.reason) == (action, reason)
    assert decision.outcome == f"{action.value}:{reason.value}"


states = st.sampled_from([*State, "SUSPENDED"]) | st.none()
times = st.none() | st.integers(-5, 5).map(lambda n: T0 + n * SECOND)
event_times = times | st.integers(-3, 3).map(lambda n: NOW + DEFAULT_SKEW + n * SECOND)


@given(
    status=states,
    at=event_times,
    known_status=st.sampled_from([*State, "SUSPENDED"]),
    known_at=times,
    synced=times,
    synced_update=times,
)
def test_properties(
    status: str | None,
    at: datetime | None,
    known_status: str,
    known_at: datetime | None,
    synced: datetime | None,
    synced_update: datetime | None,
) -> None:
    known = LocalFacts(known_status, known_at, synced, synced_update)
    decision = decide(EventFacts(status, at), known, now=NOW)
    if at is not None and at > NOW + DEFAULT_SKEW:
        # A time from the future never decides anything by itself.
        assert decision.action is Action.CHECK
    if decision.action is Action.APPLY:
        # Only what is newer than everything known, by a transition the table allows.
        assert status is not None and at is not None
        assert at <= NOW + DEFAULT_SKEW
        assert known_at is None or at > known_at
        assert is_allowed(known_status, status)
    if decision.action is Action.IGNORE:
        # Only what we already know, or what a later GET has covered.
        assert at is not None and known_at is not None and at <= known_at
        duplicate = status == known_status and at == known_at
        # A GET begun a whole second after the event (our clock), or a document newer than it
        # (Sinch's clock, whole seconds: an equal time may predate the event's change).
        covered_by_a_get = (synced is not None and synced >= at + SECOND) or (
            synced_update is not None and synced_update > at
        )
        assert duplicate or covered_by_a_get
