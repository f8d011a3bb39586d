"""Following the change feed: the one loop the SSE stream and `python -m app changes --follow`
share."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes import queries, repository
from app.changes.schemas import ChangeOut
from app.changes.signal import ChangeSignal
from app.core.models import RegistrationChange

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


class FeedReader:
    """One process's reads of the feed, shared by all its readers.

    Readers at the same position share one query (a single flight: 200 streams woken by one
    change cost one read, not 200), and each change is turned into its JSON item once (a bounded
    cache by `seq`). A reader that goes away does not cancel a read others wait for.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, cache_size: int = 4096):
        self._sessions = sessions
        self._cache_size = cache_size
        self._flights: dict[tuple[int, int], asyncio.Future[list[tuple[int, str]]]] = {}
        self._items: OrderedDict[int, str] = OrderedDict()

    async def page(self, *, after: int, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` changes after `after` as `(seq, item JSON)`; raises `FeedGone` when the
        changes right after `after` were pruned."""
        key = (after, limit)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._read(after, limit))
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        return await asyncio.shield(flight)

    async def _read(self, after: int, limit: int) -> list[tuple[int, str]]:
        rows = await read(self._sessions, after=after, limit=limit)
        check_contiguous(after, rows)
        page = []
        for row in rows:
            assert row.seq is not None
            item = self._items.get(row.seq)
            if item is None:
                item = ChangeOut.of(row).model_dump_json(by_alias=True)
                self._items[row.seq] = item
                if len(self._items) > self._cache_size:
                    self._items.popitem(last=False)
            page.append((row.seq, item))
        return page


async def follow(
    feed: FeedReader, signal: ChangeSignal, *, after: int
) -> AsyncIterator[tuple[int, str]]:
    """Every change numbered after `after`, in `seq` order, forever, as `(seq, item JSON)`: reads
    until nothing is new, then waits for `signal` (no session is held while waiting). Raises
    `FeedGone` when a reader that fell behind the retention finds its next changes pruned."""
    while True:
        token = signal.token()
        page = await feed.page(after=after, limit=BATCH)
        for seq, item in page:
            after = seq
            yield seq, item
        if not page:
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
