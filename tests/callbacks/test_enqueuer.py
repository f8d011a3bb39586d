"""The enqueuer (app/callbacks/enqueuer.py) gathers the callbacks of a steady flow into jobs of
several, on a real Redis: the worker's cost is mostly per job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from arq import ArqRedis
from arq.connections import RedisSettings, create_pool

from app.callbacks.enqueuer import Enqueuer
from app.core.jobs import events_job_id

WINDOW = 0.5
"""Long, so that what the test submits within it is surely within it on a busy machine."""


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        yield pool
    finally:
        await pool.aclose()


async def queued(redis: ArqRedis, count: int) -> set[str]:
    """The ids of the queued jobs, once there are `count` (bounded wait)."""
    async with asyncio.timeout(10):
        while len(jobs := {job.job_id for job in await redis.queued_jobs()}) < count:
            await asyncio.sleep(0.01)
    return jobs


async def test_a_flow_is_enqueued_in_jobs_of_several_and_a_lone_callback_at_once(
    redis: ArqRedis,
) -> None:
    enqueuer = Enqueuer(redis, coalesce_seconds=WINDOW)
    enqueuer.start()
    try:
        # After a quiet moment: enqueued at once, alone.
        await enqueuer.submit([1])
        assert await queued(redis, 1) == {events_job_id([1])}
        # Within the window of that enqueue: the three that follow wait for its end, together.
        for row in (2, 3, 4):
            await enqueuer.submit([row])
            await asyncio.sleep(0.01)
        assert await queued(redis, 2) == {events_job_id([1]), events_job_id([2, 3, 4])}
    finally:
        await enqueuer.stop()
