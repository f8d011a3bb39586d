"""Following the change feed: the one loop the SSE stream and `python -m app changes --follow`
share."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes import queries, repository
from app.changes.signal import ChangeSignal
from app.models import RegistrationChange

BATCH = 100
WAIT_SECONDS = 30.0


async def read(
    sessions: async_sessionmaker[AsyncSession], *, after: int, limit: int
) -> Sequence[RegistrationChange]:
    """A page of numbered changes after `after`, in a session of its own."""
    async with sessions() as session:
        return await queries.page(session, after=after, limit=limit)


class FeedGone(Exception):
    """The changes after the reader's position were pruned: it must resynchronise."""


def check_contiguous(after: int, rows: Sequence[RegistrationChange]) -> None:
    """Raise `FeedGone` when `rows` do not start right after `after` (`seq` has no gaps, and
    pruning takes a prefix: a hole means what the reader has not read is gone)."""
    if rows and rows[0].seq != after + 1:
        raise FeedGone(after)


async def follow(
    sessions: async_sessionmaker[AsyncSession], signal: ChangeSignal, *, after: int
) -> AsyncIterator[RegistrationChange]:
    """Every change numbered after `after`, in `seq` order, forever: reads until nothing is new,
    then waits for `signal` (no session is held while waiting). Raises `FeedGone` when a reader
    that fell behind the retention finds its next changes pruned."""
    while True:
        token = signal.token()
        rows = await read(sessions, after=after, limit=BATCH)
        check_contiguous(after, rows)
        for row in rows:
            assert row.seq is not None
            after = row.seq
            yield row
        if not rows:
            await signal.wait(token, WAIT_SECONDS)


PRUNE_BATCH = 5000


async def prune(
    sessions: async_sessionmaker[AsyncSession], *, recorded_before: datetime, stop_at: float
) -> tuple[int, bool]:
    """Delete changes recorded before the cutoff, `PRUNE_BATCH` per transaction, until done or
    `stop_at` (monotonic clock). Answers (deleted, complete)."""
    total = 0
    while time.monotonic() < stop_at:
        async with sessions.begin() as session:
            deleted = await repository.prune(
                session, recorded_before=recorded_before, limit=PRUNE_BATCH
            )
        total += deleted
        if deleted < PRUNE_BATCH:
            return total, True
    return total, False
