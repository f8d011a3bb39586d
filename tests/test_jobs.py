"""Batched enqueueing makes exactly the jobs arq's own `enqueue_job` makes."""

from __future__ import annotations

from arq.jobs import Job

from app.core.jobs import (
    EVENTS_PER_JOB,
    PROCESS_EVENT,
    PROCESS_EVENTS,
    create_redis,
    enqueue_event,
    enqueue_event_batches,
    enqueue_events,
    event_job_id,
    events_job_id,
)
from app.core.settings import DEFAULT_DATABASE_URL, Settings
from tests.conftest import make_settings


async def test_enqueue_events_matches_arq_and_skips_queued_jobs(redis_url: str) -> None:
    settings: Settings = make_settings(DEFAULT_DATABASE_URL, redis_url)  # never connected
    redis = create_redis(settings)
    try:
        assert await enqueue_events(redis, [1, 2]) == 2
        assert await enqueue_events(redis, [2, 3]) == 1  # 2 is queued already
        assert await enqueue_event(redis, 3) is False  # and arq's own check agrees
        assert await enqueue_events(redis, []) == 0

        batched = await Job(event_job_id(1), redis).info()
        assert await enqueue_event(redis, 4) is True
        single = await Job(event_job_id(4), redis).info()
        assert batched is not None
        assert single is not None
        assert (batched.function, batched.args, batched.kwargs) == (PROCESS_EVENT, (1,), {})
        assert (single.function, single.args) == (PROCESS_EVENT, (4,))
        queued = await redis.zrange("arq:queue", 0, -1)
        assert sorted(queued) == sorted(event_job_id(n).encode() for n in (1, 2, 3, 4))
    finally:
        await redis.aclose()


async def test_kept_rows_are_enqueued_in_batches_in_kept_order(redis_url: str) -> None:
    settings: Settings = make_settings(DEFAULT_DATABASE_URL, redis_url)  # never connected
    redis = create_redis(settings)
    try:
        rows = list(range(100, 100 + EVENTS_PER_JOB * 2 + 3))
        assert await enqueue_event_batches(redis, rows) == 3
        chunks = [rows[:EVENTS_PER_JOB], rows[EVENTS_PER_JOB : 2 * EVENTS_PER_JOB], rows[-3:]]
        for chunk in chunks:
            job = await Job(events_job_id(chunk), redis).info()
            assert job is not None
            assert (job.function, job.args) == (PROCESS_EVENTS, (chunk,))
        # The same batch again (an enqueue retried): refused like arq refuses a queued job id.
        assert await enqueue_event_batches(redis, rows[-3:]) == 0
    finally:
        await redis.aclose()
