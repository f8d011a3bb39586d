"""The sending cycle's batching rule (app/subscriptions/sender.py, `wait_for_batch`): a cycle waits
for its batch to fill up to `CYCLE_SECONDS`, but comes at once when `FULL_BATCH` POSTs have ended,
so that under load the slots, not the clock, bound the rate. Every wait here is bounded by
`asyncio.timeout`: a rule that waited for the clock instead would fail, not hang."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from app.subscriptions import sender
from app.subscriptions.delivery import CONCURRENCY, Attempt
from app.subscriptions.repository import Due

FAR = 3600.0
"""A cycle's end that no test reaches: only the batch can end these waits."""


def flying(ended: int, running: int) -> dict[asyncio.Task[Attempt], Due]:
    """`ended` POSTs done and `running` still waiting (never ending by themselves)."""

    async def done() -> Attempt:
        return Attempt(None, "ended")

    async def hangs() -> Attempt:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    tasks = [asyncio.ensure_future(done()) for _ in range(ended)]
    tasks += [asyncio.ensure_future(hangs()) for _ in range(running)]
    return dict.fromkeys(tasks, Due(0, "reg", 0, datetime.now(UTC), 0, {}))


async def cancel(tasks: dict[asyncio.Task[Attempt], Due]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_full_batch_of_ended_posts_starts_the_cycle_at_once() -> None:
    tasks = flying(ended=sender.FULL_BATCH, running=CONCURRENCY - sender.FULL_BATCH)
    await asyncio.sleep(0)  # the done ones end
    try:
        async with asyncio.timeout(5):
            await sender.wait_for_batch(tasks, time.monotonic() + FAR)
    finally:
        await cancel(tasks)


async def test_the_batch_fills_as_posts_end_until_it_is_full() -> None:
    """One short of a full batch, the cycle waits; the POST that completes it ends the wait."""
    tasks = flying(ended=sender.FULL_BATCH - 1, running=2)
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(sender.wait_for_batch(tasks, time.monotonic() + FAR))
    try:
        await asyncio.sleep(0.05)
        assert not waiting.done()  # one short: the cycle waits for more
        running = [task for task in tasks if not task.done()]
        running[0].cancel()  # a POST that ends (its outcome does not matter here)
        async with asyncio.timeout(5):
            await waiting
    finally:
        waiting.cancel()
        await cancel(tasks)


async def test_with_nothing_in_flight_the_clock_ends_the_wait() -> None:
    """Only changes numbered could come: the cycle waits for its end, not for POSTs."""
    until = time.monotonic() + 0.01
    async with asyncio.timeout(5):
        await sender.wait_for_batch({}, until)
    assert time.monotonic() >= until  # not at once: the cycle keeps its pace
