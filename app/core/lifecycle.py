"""Stopping background tasks in a way that cannot hang a shutdown.

A process's background loops (the change sequencer and signal, the callback secrets' refresh, the
inbox writers, the enqueuer) are stopped by cancelling their task and waiting for it to end. A
cancellation can be lost, though: Python 3.11's `asyncio.wait_for` returns the result of an
awaitable that completed in the same moment as the cancellation instead of raising it
(CPython gh-86296, fixed in 3.12 only), and a library may catch it. The loop then goes on, and an
`await task` after `task.cancel()` waits forever: an API process whose lifespan never ends, a
worker whose shutdown never returns. `stop_task` cancels again while the task keeps running and
gives up after a bound, logging the task it left behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Final

log = logging.getLogger(__name__)

STOP_SECONDS: Final = 5.0
"""How long a stop waits for a cancelled task to end before leaving it behind."""
RECANCEL_SECONDS: Final = 0.5
"""How long a cancelled task may take to end before it is cancelled again."""


async def stop_task(task: asyncio.Task[Any] | None, *, seconds: float = STOP_SECONDS) -> bool:
    """Cancel `task` and wait until it has ended, for at most `seconds`; cancel it again (and say
    so: a loop that loses a cancellation is a bug) every `RECANCEL_SECONDS` while it keeps
    running. Answers whether it ended. Neither raises what the task raised (logged) nor waits
    longer than `seconds`."""
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    cancels = 0
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.error(
                "background task %s did not stop within %.1f s; left behind",
                task.get_name(),
                seconds,
            )
            return False
        if cancels:
            log.warning(
                "background task %s did not end at its cancellation; cancelled again",
                task.get_name(),
            )
        task.cancel()
        cancels += 1
        await asyncio.wait({task}, timeout=min(remaining, RECANCEL_SECONDS))
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("background task %s had failed: %r", task.get_name(), error)
    return True


async def within(seconds: float, step: Awaitable[object], what: str) -> None:
    """Await `step` (a shutdown step) for at most `seconds`; then it is cancelled (and waited for
    `RECANCEL_SECONDS` more at most). What it raises is logged, not raised, so that the steps
    after it still run."""
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        log.error("%s did not finish within %.1f s; cancelled", what, seconds)
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    elif not task.cancelled() and (error := task.exception()) is not None:
        log.error("%s failed: %r", what, error)
