"""The sequencer: numbers recorded changes after their commit, then tells readers.

Every process that records changes runs one (`start()` in its start-up) and pokes it after a
commit that may have recorded some (`poke()`: no waiting on the hot path). It numbers in its own
short transactions (`repository.number`), coalescing the pokes of `SETTLE_SECONDS`, and publishes
once per run (`signal.publish`). It also runs every `INTERVAL_SECONDS` unpoked, so a change
committed by a process that died before numbering it gets its number anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes import repository
from app.changes.signal import publish
from app.core.lifecycle import STOP_SECONDS, stop_task

log = logging.getLogger(__name__)

SETTLE_SECONDS: Final = 0.01
INTERVAL_SECONDS: Final = 2.0


async def number_and_publish(
    sessionmaker: async_sessionmaker[AsyncSession], redis: Redis | None
) -> int:
    """Number every committed change still unnumbered; publish when there were any."""
    total = 0
    while True:
        async with sessionmaker.begin() as session:
            numbered = await repository.number(session)
        total += numbered
        if numbered < repository.NUMBER_BATCH:
            break
    if total and redis is not None:
        await publish(redis)
    return total


class Sequencer:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], redis: Redis) -> None:
        self._sessionmaker = sessionmaker
        self._redis = redis
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def poke(self) -> None:
        """Changes may have been committed: number them soon."""
        self._poked.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-sequencer")

    async def stop(self) -> None:
        """Stop, then number what is left (each for a bounded time: `app/core/lifecycle.py`)."""
        if self._task is None:
            return
        # The loop also ends by itself at its next turn: a cancellation lost inside a database or
        # Redis call (it happens: a turn was seen numbering on after its cancellation) no longer
        # keeps it going.
        self._stopping = True
        await stop_task(self._task)
        with contextlib.suppress(SQLAlchemyError, OSError, TimeoutError):
            async with asyncio.timeout(STOP_SECONDS):
                await number_and_publish(self._sessionmaker, self._redis)

    async def _run(self) -> None:
        while not self._stopping:
            # `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11 the latter loses a
            # cancellation that comes as the poke does (CPython gh-86296), and `stop()` waited.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INTERVAL_SECONDS):
                    await self._poked.wait()
            await asyncio.sleep(SETTLE_SECONDS)  # let the commits of a burst come together
            self._poked.clear()
            try:
                await number_and_publish(self._sessionmaker, self._redis)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("change feed: numbering failed (%s); retried shortly", exc)
