"""Enqueues processing of newly kept callbacks, off the answer's path.

Losing an enqueue costs nothing but time: the row stays `received` and the worker's sweep enqueues
it later. So this never blocks a request, never raises, enqueues whatever has gathered in one Redis
round trip, and stops trying for a moment once Redis fails instead of paying a connection timeout
per callback.

Under a steady flow it enqueues at most once per `COALESCE_SECONDS`: the worker's cost is mostly
per job (arq's, about half a millisecond of CPU), and a job takes up to `EVENTS_PER_JOB` callbacks,
but only those enqueued together. Enqueued as each group commit ended, a backlog of 6,000 callbacks
made 3,800 jobs (1.6 callbacks each). A callback that comes after a quiet moment is enqueued at
once; one that follows another within the window waits for the window's end, so a callback waits
here at most `COALESCE_SECONDS`, and only when others keep it company.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from arq import ArqRedis

from app.core.jobs import enqueue_event_batches
from app.core.lifecycle import stop_task

log = logging.getLogger(__name__)

PAUSE_AFTER_FAILURE_SECONDS = 2.0
MAX_BATCH = 500
COALESCE_SECONDS = 0.002
"""The shortest time between two enqueues. Measured with `bench.worker` (bench/README.md): with
2 ms the worker applies 1,340-1,369 events/s (886-918 enqueuing each commit at once) and the
callbacks' median lag at 200/s is as it was (8.0-8.2 ms); 5 ms added 3 ms to that median for
little more. Callbacks first."""


class Enqueuer:
    def __init__(
        self,
        redis: ArqRedis,
        *,
        max_pending: int = 100_000,
        coalesce_seconds: float = COALESCE_SECONDS,
    ) -> None:
        self._redis = redis
        self._pending: list[int] = []
        self._max_pending = max_pending
        self._coalesce = coalesce_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._paused_until = 0.0
        self._flushed_at = -coalesce_seconds

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="enqueuer")

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Try to enqueue what is pending for up to `grace_seconds`; the sweep gets the rest."""
        deadline = time.monotonic() + grace_seconds
        while (
            self._pending and time.monotonic() < deadline and time.monotonic() >= self._paused_until
        ):
            await self._flush()
        await stop_task(self._task)
        self._task = None

    async def submit(self, row_ids: Sequence[int]) -> None:
        room = self._max_pending - len(self._pending)
        self._pending.extend(row_ids[:room])  # past the room: the sweep will find these rows
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            # Within the window of the last enqueue: let the rest of the flow join this one.
            await asyncio.sleep(max(0.0, self._flushed_at + self._coalesce - time.monotonic()))
            self._wake.clear()
            self._flushed_at = time.monotonic()
            await self._flush()
            if self._pending:
                # More than a batch waited: the rest goes after the next window, as what came
                # during this flush does (its `submit` woke the loop again).
                self._wake.set()

    async def _flush(self) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        if time.monotonic() < self._paused_until:
            return  # Redis failed a moment ago: drop, the sweep re-enqueues these rows
        try:
            await enqueue_event_batches(self._redis, batch)
        except Exception as exc:  # Redis down: the sweep re-enqueues the rows later
            log.warning(
                "cannot enqueue %d callback events (%s); they wait for the sweep",
                len(batch),
                type(exc).__name__,
            )
            self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
