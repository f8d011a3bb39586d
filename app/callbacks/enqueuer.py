"""Enqueues processing of newly kept callbacks, off the answer's path.

Losing an enqueue costs nothing but time: the row stays `received` and the worker's sweep enqueues
it later. So this never blocks a request, never raises, and stops trying for a moment once Redis
fails, instead of paying a connection timeout per callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from arq import ArqRedis

from app.worker.queue import enqueue_event

log = logging.getLogger(__name__)

PAUSE_AFTER_FAILURE_SECONDS = 2.0


class Enqueuer:
    def __init__(
        self, redis: ArqRedis, *, max_pending: int = 100_000, concurrency: int = 16
    ) -> None:
        self._redis = redis
        self._queue: asyncio.Queue[int] = asyncio.Queue(maxsize=max_pending)
        self._concurrency = concurrency
        self._tasks: list[asyncio.Task[None]] = []
        self._paused_until = 0.0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"enqueuer-{n}") for n in range(self._concurrency)
        ]

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Try to enqueue what is pending for up to `grace_seconds`; the sweep gets the rest."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_seconds):
                await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def submit(self, row_ids: Sequence[int]) -> None:
        for row_id in row_ids:
            if self._queue.full():
                return  # shed load: the sweep will find these rows
            self._queue.put_nowait(row_id)

    async def _run(self) -> None:
        while True:
            row_id = await self._queue.get()
            try:
                if time.monotonic() >= self._paused_until:
                    await enqueue_event(self._redis, row_id)
            except Exception as exc:  # Redis down: the sweep re-enqueues the row later
                if time.monotonic() >= self._paused_until:
                    log.warning(
                        "cannot enqueue callback events (%s); they wait for the sweep",
                        type(exc).__name__,
                    )
                self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
            finally:
                self._queue.task_done()
