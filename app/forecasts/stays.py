"""A registration's stays in each state, and its decision clock, on Sinch's clock. Pure.

Two sources tell when a registration entered a state, both in Sinch's time: the registration
document's `logs[]` (each entry's `registrationState` and `createTime`; their order is unknown,
docs/sinch.md), which reach back before this service knew the registration, and the history
rows this service applied (`at`, Sinch's time of each change: a callback's event time or a
document's `updateTime`). They are merged by time; a state repeated by the next entry is the same
stay (a log comment written during a stay is not a new one).

A stay in a final state (APPROVED, REJECTED) never ends and is not a stay anyone waits through:
it is the outcome of the stays before it, not one of them.

The decision clock is the time from submission (the first state after DRAFT) to the first
decision, split into time waiting on the customer (PENDING, PENDING_ATTACHMENTS: Sinch waits for
them) and time waiting on Sinch (every other state). A forecast of Sinch's decision runs on the
second: a customer who takes a week to answer does not make Sinch slow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from app.registrations.states import FINAL_STATES, State
from app.sinch.schemas import parse_sinch_time

WAITING_ON_CUSTOMER: Final = frozenset({State.PENDING.value, State.PENDING_ATTACHMENTS.value})
"""States in which Sinch waits for the customer."""
FINAL: Final = frozenset(state.value for state in FINAL_STATES)
NOT_SUBMITTED: Final = State.DRAFT.value


@dataclass(frozen=True, slots=True)
class Entry:
    """The registration was in `status` from `at` (Sinch's time) on."""

    status: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Stay:
    status: str
    entered_at: datetime
    left_at: datetime | None
    """None while the registration is still in the state."""
    next_status: str | None


@dataclass(frozen=True, slots=True)
class Clock:
    """A registration's wait for a decision, as of its last known state."""

    submitted_at: datetime | None
    """When it first entered a state after DRAFT; None when that is unknown (never submitted)."""
    decided_at: datetime | None
    outcome: str | None
    """APPROVED or REJECTED once decided."""
    customer_seconds: float
    """Time waiting on the customer in stays that ended before the decision."""
    waiting_on_customer_since: datetime | None
    """Set while it waits on the customer now (undecided, in PENDING or PENDING_ATTACHMENTS)."""

    def seconds_at(self, now: datetime) -> tuple[float, float]:
        """(waiting on Sinch, waiting on the customer), in seconds, from submission to the
        decision, or to `now` while undecided. Zero for both when never submitted."""
        if self.submitted_at is None:
            return 0.0, 0.0
        end = self.decided_at or now
        customer = self.customer_seconds
        if self.waiting_on_customer_since is not None and self.decided_at is None:
            customer += max(0.0, (now - self.waiting_on_customer_since).total_seconds())
        total = max(0.0, (end - self.submitted_at).total_seconds())
        return max(0.0, total - customer), min(customer, total)


def log_entries(document: object) -> list[Entry]:
    """The entries of a Sinch document's `logs[]` that name a state and a readable time. Never
    raises on any JSON value."""
    if not isinstance(document, dict):
        return []
    logs = document.get("logs")
    if not isinstance(logs, list):
        return []
    entries = []
    for log in logs:
        if not isinstance(log, dict):
            continue
        status, at = log.get("registrationState"), parse_sinch_time(log.get("createTime"))
        if isinstance(status, str) and status and at is not None:
            entries.append(Entry(status[:64], at))
    return entries


def timeline(entries: Iterable[Entry]) -> list[Entry]:
    """`entries` by time, each state change once: an entry repeating the state before it is the
    same stay. Equal times keep their given order (history rows after log entries: the caller
    passes logs first), so the newest word on a moment wins."""
    merged: list[Entry] = []
    for entry in sorted(entries, key=lambda e: e.at):
        if merged and merged[-1].status == entry.status:
            continue
        merged.append(entry)
    return merged


def stays_of(entries: Sequence[Entry]) -> list[Stay]:
    """The stays of a timeline (`timeline`'s answer): each state until the next entry, the last
    one still running; stays in final states left out (module docstring)."""
    stays = []
    for index, entry in enumerate(entries):
        if entry.status in FINAL:
            continue
        following = entries[index + 1] if index + 1 < len(entries) else None
        stays.append(
            Stay(
                status=entry.status,
                entered_at=entry.at,
                left_at=following.at if following else None,
                next_status=following.status if following else None,
            )
        )
    return stays


def clock_of(entries: Sequence[Entry]) -> Clock:
    """The decision clock of a timeline (`timeline`'s answer), as the module docstring says."""
    submitted_at: datetime | None = None
    customer = 0.0
    for index, entry in enumerate(entries):
        if submitted_at is None:
            if entry.status == NOT_SUBMITTED:
                continue
            submitted_at = entry.at
        if entry.status in FINAL:
            return Clock(submitted_at, entry.at, entry.status, customer, None)
        following = entries[index + 1] if index + 1 < len(entries) else None
        if entry.status in WAITING_ON_CUSTOMER:
            if following is None:
                return Clock(submitted_at, None, None, customer, entry.at)
            customer += (following.at - entry.at).total_seconds()
    return Clock(submitted_at, None, None, customer, None)
