"""The dispatcher: hands due deliveries to the worker's `deliver` jobs, in order.

One runs in each worker process. It wakes when changes are numbered in any process (the change
feed's `ChangeSignal`), when one of its jobs finished (`poke()`), and every `INTERVAL_SECONDS`
(retries come due with time). It leases what is due (repository.lease_due: in order per
subscription and registration, at most `PER_SUBSCRIPTION` in flight per subscription, so a slow or
dead receiver holds a few jobs, never the worker) and enqueues one job per delivery. A lease that
no job honours (Redis lost it, the worker died) expires after `LEASE_SECONDS`, and the delivery is
handed out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Final

from arq import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.signal import ChangeSignal
from app.db import utcnow
from app.jobs import enqueue_deliveries
from app.subscriptions import repository

log = logging.getLogger(__name__)

INTERVAL_SECONDS: Final = 1.0
PER_SUBSCRIPTION: Final = 4
BATCH: Final = 200


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: ArqRedis,
        signal: ChangeSignal,
        *,
        lease_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._redis = redis
        self._signal = signal
        self._lease = timedelta(seconds=lease_seconds)
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        self._poked.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self) -> int:
        """Lease what is due and enqueue it; answers how many were handed out."""
        now = utcnow()
        async with self._sessions.begin() as session:
            due = await repository.lease_due(
                session,
                now=now,
                lease_until=now + self._lease,
                per_subscription=PER_SUBSCRIPTION,
                limit=BATCH,
            )
        if due:
            await enqueue_deliveries(self._redis, [delivery.id for delivery in due])
        return len(due)

    async def _run(self) -> None:
        while True:
            token = self._signal.token()
            try:
                handed = await self.run_once()
            except (SQLAlchemyError, RedisError, OSError) as exc:
                log.warning("deliveries: dispatching failed (%s); retried shortly", exc)
                handed = 0
            if handed >= BATCH:
                continue  # more are due: no waiting
            poked = asyncio.create_task(self._poked.wait())
            signalled = asyncio.create_task(self._signal.wait(token, INTERVAL_SECONDS))
            try:
                await asyncio.wait({poked, signalled}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                poked.cancel()
                signalled.cancel()
            self._poked.clear()
