"""The counts as the console, `/v1/counts` and `/metrics` show them, and the worker's fold.

A count is exact at every moment: the triggers of migration 0009 write a delta in the very
transaction of each change, and a read sums totals and deltas in one statement. Folding only keeps
that read cheap; a worker that stops folding makes reads slower, never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.models import EventState
from app.counts import repository
from app.tokens.principal import Visible

SERIES_HOURS = 24
"""The hourly series cover the current hour and the 23 before it."""
HOURS_KEPT = 48
"""Hourly totals older than this are forgotten by the fold."""
FOLD_BATCH = 20_000


@dataclass(frozen=True, slots=True)
class Hour:
    """One UTC hour of the series."""

    start: datetime
    received: int
    """Callbacks kept (new events, duplicates not counted) that arrived in this hour."""
    finished: int
    """Events whose processing ended (processed, failed or invalid) in this hour."""
    lag_ms: int
    """Sum over those events of processing end minus arrival, in milliseconds."""

    @property
    def mean_lag_seconds(self) -> float | None:
        """Mean time from arrival to the end of processing; None when nothing finished."""
        return self.lag_ms / self.finished / 1000 if self.finished else None


@dataclass(frozen=True, slots=True)
class Counts:
    events_by_state: dict[str, int]
    """Every `EventState`, kept events only (pruned ones are no longer counted)."""
    registrations_by_status: dict[str, int]
    """Each status at least one registration holds, by name."""
    hours: list[Hour]
    """`SERIES_HOURS` hours, oldest first, the last one the current hour."""

    @property
    def events_total(self) -> int:
        return sum(self.events_by_state.values())

    @property
    def registrations_total(self) -> int:
        return sum(self.registrations_by_status.values())


def hour_label(moment: datetime) -> str:
    """The name part of `moment`'s UTC hour, as the triggers write it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H")


async def read(session: AsyncSession, now: datetime, *, projects: Visible) -> Counts:
    """The counts of `projects` (None: of every project), summed, as they stand, the series
    ending with `now`'s hour."""
    values = await repository.current(session, projects)
    events = {state.value: 0 for state in EventState}
    statuses: dict[str, int] = {}
    for name, value in values.items():
        kind, _, key = name.partition(":")
        if kind == "event_state":
            events[key] = value
        elif kind == "registration_status" and value:
            statuses[key] = value
    current_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    for back in range(SERIES_HOURS - 1, -1, -1):
        start = current_hour - timedelta(hours=back)
        label = f"{repository.HOUR_PREFIX}{hour_label(start)}:"
        hours.append(
            Hour(
                start=start,
                received=values.get(label + "received", 0),
                finished=values.get(label + "finished", 0),
                lag_ms=values.get(label + "lag_ms", 0),
            )
        )
    return Counts(
        events_by_state=events,
        registrations_by_status=dict(sorted(statuses.items())),
        hours=hours,
    )


async def fold(sessionmaker: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Fold every delta into the totals, `FOLD_BATCH` per transaction, then forget hours older
    than `HOURS_KEPT`. Answers how many deltas were folded."""
    total = 0
    while True:
        async with sessionmaker.begin() as session:
            moved = await repository.fold_batch(session, FOLD_BATCH)
        total += moved
        if moved < FOLD_BATCH:
            break
    async with sessionmaker.begin() as session:
        await repository.tidy(session, hour_label(now - timedelta(hours=HOURS_KEPT)))
    return total
