"""The dispatcher: has the worker send what is due, one job per subscription.

One runs in each worker process. It wakes when changes are numbered in any process (the change
feed's `ChangeSignal`), when one of its jobs finished (`poke()`), when the next retry comes due,
and at least every `INTERVAL_SECONDS`, but not more often than every `MIN_PAUSE_SECONDS`; it
finds the enabled subscriptions with a delivery due (one index probe each) and enqueues a
`deliver` job for each, except those whose job runs in this process (`sending`): a running job
takes new changes itself (app/subscriptions/sender.py). So news of changes alone does not make it
look when, at its last look (at most `INTERVAL_SECONDS` ago), no enabled subscription lacked a job
of this process: with no subscription at all, or with every one sending here under a steady flow,
the changes numbered a hundred times a second cost it nothing (`needs_look`). A subscription
created or enabled since is found at the next look, within `INTERVAL_SECONDS`. The job id is the
subscription's, so a subscription has one job at a time across all workers: a slow or dead
receiver holds one job slot, never the others' deliveries.

By default deliveries run in worker processes of their own (`arq app.worker.DeliveryWorkerSettings`,
on `DELIVERIES_QUEUE`), apart from the callbacks' jobs. A small install may serve both in one
process (`DELIVERY_WORKER=shared`): then at most `jobs` delivery jobs run in it at once (half its
job slots), so however many subscriptions are busy or their receivers dead, the other half of the
slots is the events'. A `deliver` job that finds its process full ends at once
(`sending` yields False); the dispatcher enqueues no more than its process has room for, and
looks again when one of its jobs ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass, field
from typing import Final

from arq import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.signal import ChangeSignal
from app.core.db import utcnow
from app.core.jobs import enqueue_deliveries
from app.core.lifecycle import stop_task
from app.subscriptions import repository

log = logging.getLogger(__name__)

INTERVAL_SECONDS: Final = 1.0
MIN_PAUSE_SECONDS: Final = 0.05
"""Between two looks: changes are numbered up to a hundred times a second under load, and a
running job takes those itself; this bounds the cost for the others (two queries a look)."""


@dataclass(eq=False, repr=False, slots=True)
class Dispatcher:
    """Enqueues the subscriptions' `deliver` jobs for one worker process (module docstring)."""

    sessions: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    signal: ChangeSignal
    """The change feed's: news that changes were numbered wakes it."""
    _: KW_ONLY
    jobs: int
    """At most this many of its jobs run in this process at once."""
    queue: str
    """The arq queue it enqueues on."""
    interval: float = INTERVAL_SECONDS
    """The longest between two looks (`INTERVAL_SECONDS`; a test may stretch it)."""
    _poked: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = field(init=False, default=None)
    _sending: Counter[str] = field(init=False, default_factory=Counter)
    """The subscriptions this process's jobs are sending, with how many jobs each."""
    looks: int = field(init=False, default=0)
    """How many times it has looked at the database (`run_once`), for observing it."""
    _unattended: int | None = field(init=False, default=None)
    """How many enabled subscriptions had no job of this process at the last look (None before
    the first)."""
    _looked_at: float = field(init=False, default=0.0)
    """When (`time.monotonic()`) the last look was."""

    def poke(self) -> None:
        self._poked.set()

    @contextlib.contextmanager
    def sending(self, subscription_id: str) -> Iterator[bool]:
        """Admits a job of this process to send the subscription's deliveries (yields True; while
        it does, the subscription is not enqueued), unless `jobs` already do (yields False: the
        job ends without sending, and the subscription is enqueued again once there is room).
        An admitted job's end, however it ends (done, failed, cancelled), makes the dispatcher
        look again: more may be due, and a look skipped meanwhile counted on that job."""
        if sum(self._sending.values()) >= self.jobs:
            yield False
            return
        self._sending[subscription_id] += 1
        try:
            yield True
        finally:
            self._sending[subscription_id] -= 1
            if not self._sending[subscription_id]:
                del self._sending[subscription_id]
            self.poke()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery-dispatcher")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def run_once(self) -> float:
        """Enqueue a job for each subscription with something due; answers how long to wait
        before the next look (until the next retry comes due, at most `INTERVAL_SECONDS`)."""
        now = utcnow()
        self.looks += 1
        async with self.sessions() as session:
            found = await repository.to_dispatch(session, now, list(self._sending))
            upcoming = await repository.next_due(session, now)
        self._unattended, self._looked_at = found.unattended, time.monotonic()
        room = self.jobs - sum(self._sending.values())
        due = [one for one in found.due if one not in self._sending]
        due = due[: max(0, room)]
        if due:
            await enqueue_deliveries(self.redis, due, queue=self.queue)
        if upcoming is None or upcoming <= now:
            return self.interval
        return min(self.interval, (upcoming - now).total_seconds())

    async def _run(self) -> None:
        woke = Woke.TIMEOUT
        look_by = time.monotonic()
        while True:
            token = self.signal.token()
            since_look = time.monotonic() - self._looked_at
            if needs_look(woke, self._unattended, since_look=since_look, interval=self.interval):
                pause = self.interval
                try:
                    pause = await self.run_once()
                except (SQLAlchemyError, RedisError, OSError) as exc:
                    log.warning("deliveries: dispatching failed (%s); retried shortly", exc)
                look_by = time.monotonic() + pause
            woke = await self._wait(token, max(0.0, look_by - time.monotonic()))
            self._poked.clear()
            await asyncio.sleep(MIN_PAUSE_SECONDS)

    async def _wait(self, token: int, seconds: float) -> Woke:
        """Until a job of this process ends (`poke`), changes are numbered, or `seconds` pass."""
        poked = asyncio.create_task(self._poked.wait())
        signalled = asyncio.create_task(self.signal.wait(token, seconds))
        try:
            await asyncio.wait({poked, signalled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poked.cancel()
            signalled.cancel()
        if self._poked.is_set():
            return Woke.POKED
        return Woke.CHANGES if self.signal.token() != token else Woke.TIMEOUT


class Woke(enum.Enum):
    """What ended the dispatcher's wait."""

    POKED = "poked"
    """A job of this process ended: its subscription may need another."""
    CHANGES = "changes"
    """Changes were numbered."""
    TIMEOUT = "timeout"
    """The interval passed, or a retry came due."""


def needs_look(
    woke: Woke, unattended: int | None, *, since_look: float, interval: float = INTERVAL_SECONDS
) -> bool:
    """Whether the dispatcher looks at the database now. Always, but when only news of changes
    woke it and its last look, under `interval` ago, found every enabled subscription with a job
    of this process sending it (`unattended`, how many had none, is 0; None before the first
    look), which takes the new changes itself, or found none enabled. A job of this process that
    ended since, however it ended, pokes it (`Woke.POKED`: `Dispatcher.sending`)."""
    if woke is not Woke.CHANGES or unattended is None or since_look >= interval:
        return True
    return unattended > 0
