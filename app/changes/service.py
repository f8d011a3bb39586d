"""Following the change feed: the one loop the SSE stream and `python -m app changes --follow`
share."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes import queries, repository
from app.changes.schemas import ChangeOut
from app.changes.signal import ChangeSignal
from app.core.models import RegistrationChange
from app.tokens.principal import Visible

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


class FeedItem(NamedTuple):
    """One change as the feed serves it: its `seq`, its project, and its item's JSON."""

    seq: int
    project_id: str
    json: str


def shown(page: Sequence[FeedItem], visible: Visible) -> list[FeedItem]:
    """The items of `page` a reader limited to `visible` sees (None: every project). A reader
    that sees only some still moves its position past the whole page: what it skips is not its
    own (app/projects/queries.py's `within` is the same rule in SQL)."""
    if visible is None:
        return list(page)
    return [item for item in page if item.project_id in visible]


class FeedReader:
    """One process's reads of the feed, shared by all its readers.

    Readers at the same position share one query (a single flight: 200 streams woken by one
    change cost one read, not 200), and each change is turned into its JSON item once (a bounded
    cache by `seq`). A reader that goes away does not cancel a read others wait for.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, cache_size: int = 4096):
        self._sessions = sessions
        self._cache_size = cache_size
        self._flights: dict[tuple[int, int], asyncio.Future[list[FeedItem]]] = {}
        self._items: OrderedDict[int, FeedItem] = OrderedDict()

    async def page(self, *, after: int, limit: int) -> list[FeedItem]:
        """Up to `limit` changes after `after`, of every project (readers limited to projects
        filter with `shown`); raises `FeedGone` when the changes right after `after` were
        pruned."""
        key = (after, limit)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._read(after, limit))
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        return await asyncio.shield(flight)

    async def _read(self, after: int, limit: int) -> list[FeedItem]:
        rows = await read(self._sessions, after=after, limit=limit)
        check_contiguous(after, rows)
        page = []
        for row in rows:
            assert row.seq is not None
            item = self._items.get(row.seq)
            if item is None:
                item = FeedItem(
                    row.seq, row.project_id, ChangeOut.of(row).model_dump_json(by_alias=True)
                )
                self._items[row.seq] = item
                if len(self._items) > self._cache_size:
                    self._items.popitem(last=False)
            page.append(item)
        return page


async def follow(feed: FeedReader, signal: ChangeSignal, *, after: int) -> AsyncIterator[FeedItem]:
    """Every change numbered after `after`, in `seq` order, forever: reads until nothing is new,
    then waits for `signal` (no session is held while waiting). Raises `FeedGone` when a reader
    that fell behind the retention finds its next changes pruned."""
    while True:
        token = signal.token()
        page = await feed.page(after=after, limit=BATCH)
        for item in page:
            after = item.seq
            yield item
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
