"""The decision: can a callback be trusted as it is, ignored, or must it be checked? Pure.

A callback is a hint; a GET of the registration is the truth. The event is applied as it is only
when it is newer than everything we know, not later than our clock (plus a bounded skew), and the
transition table allows it; an event older than what we know is ignored only when a GET made after
the event already told us the truth; everything doubtful is checked with a GET.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from app.registrations.states import is_allowed, known_state
from app.sinch.schemas import parse_sinch_time


class Action(StrEnum):
    APPLY = "applied"
    IGNORE = "ignored"
    CHECK = "checked"


class Reason(StrEnum):
    TRUSTED = "trusted"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    UNKNOWN_REGISTRATION = "unknown_registration"
    STALE = "stale"
    INVALID_TRANSITION = "invalid_transition"
    UNKNOWN_STATE = "unknown_state"
    NO_TIME = "no_time"
    NO_STATE = "no_state"
    FUTURE_TIME = "future_time"


TIME_RESOLUTION = timedelta(seconds=1)
"""Sinch's times have whole seconds (`2021-11-03T14:30:03`)."""

DEFAULT_SKEW = timedelta(minutes=5)
"""How far a callback's time may run ahead of our clock and still be trusted (Sinch's clock and
ours are not the same clock). The worker takes its value from `EVENT_TIME_SKEW_SECONDS`."""


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What a callback says about its registration."""

    status: str | None
    at: datetime | None


@dataclass(frozen=True, slots=True)
class LocalFacts:
    """What we know of the registration: its status and the Sinch time of that knowledge, and of
    our last fetch from Sinch, when it was made (our clock) and the `updateTime` of the document it
    returned (Sinch's clock). Both say the same thing: a GET shows every change made before it."""

    status: str
    status_changed_at: datetime | None
    last_synced_at: datetime | None = None
    synced_update_time: datetime | None = None

    @classmethod
    def of(
        cls,
        status: str,
        status_changed_at: datetime | None,
        last_synced_at: datetime | None,
        synced_update_time: str | None,
    ) -> LocalFacts:
        """The facts as stored: `synced_update_time` is the text of the kept document's field."""
        return cls(status, status_changed_at, last_synced_at, parse_sinch_time(synced_update_time))

    def fetched_after(self, moment: datetime) -> bool:
        """True when our last GET certainly reflects what happened at `moment` (Sinch's time).

        Sinch's times have whole seconds, so a change stamped `moment` may have happened up to a
        second later: the document covers it only when its `updateTime` is later than `moment`
        (an equal one may predate a second change in the same second), and our fetch only when it
        began at least `TIME_RESOLUTION` after `moment`. Doubt costs a GET, never a lost change.
        """
        if self.synced_update_time is not None and self.synced_update_time > moment:
            return True
        return self.last_synced_at is not None and self.last_synced_at >= moment + TIME_RESOLUTION


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: Reason

    @property
    def outcome(self) -> str:
        """How the event is recorded, e.g. `applied:trusted`, `checked:stale`."""
        return f"{self.action.value}:{self.reason.value}"


def decide(
    event: EventFacts, local: LocalFacts | None, *, now: datetime, skew: timedelta = DEFAULT_SKEW
) -> Decision:
    """Trust, ignore or check `event`, given what is known here and our clock `now`.

    An event claiming a time later than `now + skew` is checked, never trusted: applied as it is,
    a time in the future would outrank every real callback that follows it.
    """
    if event.status is None:
        return Decision(Action.CHECK, Reason.NO_STATE)
    if known_state(event.status) is None:
        return Decision(Action.CHECK, Reason.UNKNOWN_STATE)
    if event.at is None:
        return Decision(Action.CHECK, Reason.NO_TIME)
    if event.at > now + skew:
        return Decision(Action.CHECK, Reason.FUTURE_TIME)
    if local is None:
        return Decision(Action.CHECK, Reason.UNKNOWN_REGISTRATION)

    known_at = local.status_changed_at
    if known_at is not None and event.at <= known_at:
        if event.at == known_at and event.status == local.status:
            return Decision(Action.IGNORE, Reason.DUPLICATE)
        if local.fetched_after(event.at):
            return Decision(Action.IGNORE, Reason.SUPERSEDED)
        return Decision(Action.CHECK, Reason.STALE)
    if not is_allowed(local.status, event.status):
        return Decision(Action.CHECK, Reason.INVALID_TRANSITION)
    return Decision(Action.APPLY, Reason.TRUSTED)
