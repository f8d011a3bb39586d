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

    def poke(self) -> None:
        """Changes may have been committed: number them soon."""
        self._poked.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-sequencer")

    async def stop(self) -> None:
        """Number what is left, then stop."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(SQLAlchemyError, OSError):
            await number_and_publish(self._sessionmaker, self._redis)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), INTERVAL_SECONDS)
            await asyncio.sleep(SETTLE_SECONDS)  # let the commits of a burst come together
            self._poked.clear()
            try:
                await number_and_publish(self._sessionmaker, self._redis)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("change feed: numbering failed (%s); retried shortly", exc)
