"""Workers poll their queue when woken (app/worker/wake.py): an enqueue reaches an idle worker at
once, although its poll falls back to a full minute, so that the idle poll can be rare. On a
Redis of the test's own: pub/sub channels are server-wide, and other tests' enqueues would wake
these workers too."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import arq.worker
import pytest
from arq import ArqRedis, func
from arq.connections import RedisSettings, create_pool
from arq.constants import in_progress_key_prefix

from app.core.jobs import EVENTS_QUEUE, enqueue_deliveries, enqueue_event_batches, wake_channel
from app.worker import wake
from tests.support.processes import PrivateRedis, private_redis

RARELY = 60.0
"""The workers' fallback poll here: a job found sooner was found by a wake-up."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path) as running:
        yield running


@pytest.fixture
async def redis(server: PrivateRedis) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings(port=server.port))
    try:
        yield pool
    finally:
        await pool.aclose()


@pytest.fixture(autouse=True)
def _arq_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """`install()` patches arq for the process; the test's changes are undone after it."""
    monkeypatch.setattr(arq.worker, "poll", arq.worker.poll)
    monkeypatch.setattr(arq.worker.Worker, "start_jobs", arq.worker.Worker.start_jobs)
    monkeypatch.setattr(wake, "_signal", None)


@contextlib.asynccontextmanager
async def woken_worker(
    server: PrivateRedis, queue: str, function: Any, **options: Any
) -> AsyncIterator[arq.worker.Worker]:
    """An arq worker on `queue` running `function`, polling as the service's do (`wake.install`)
    but falling back only every `RARELY`; stopped at the end with its jobs' tasks."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["wake"] = wake.start(ctx["redis"], queue)
        wake.install()

    worker = arq.worker.Worker(
        functions=[function],
        queue_name=queue,
        redis_settings=RedisSettings(port=server.port),
        poll_delay=RARELY,
        on_startup=on_startup,
        handle_signals=False,
        keep_result=0,
        **options,
    )
    running = asyncio.ensure_future(worker.main())
    try:
        yield worker
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        # Its jobs' own tasks end too (arq finishes a job after its function returns): a task
        # left pending is destroyed later by the garbage collector, whose finalizer then runs
        # in the middle of whatever runs next (Python 3.11.7 fails an `ast.parse` it interrupts).
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        if wake._signal is not None:
            await wake._signal.stop()
        await worker.pool.aclose()


async def test_an_enqueue_wakes_a_worker_that_polls_rarely(
    server: PrivateRedis, redis: ArqRedis
) -> None:
    queue = f"arq:queue:test-wake-{uuid.uuid4().hex}"
    ran: asyncio.Queue[str] = asyncio.Queue()

    async def deliver(ctx: dict[str, Any], subscription_id: str) -> None:
        await ran.put(subscription_id)

    async with woken_worker(server, queue, func(deliver, name="deliver")):
        async with asyncio.timeout(10):
            while wake._signal is None or not wake._signal.connected:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the worker's first look at the (empty) queue is behind it
        # The same subscription twice: its job id comes again as soon as the first job ended,
        # while arq may still hold the ended task; the look must not take it for a running one.
        for subscription in ("sub_a", "sub_b", "sub_b"):
            async with asyncio.timeout(10):  # refused while the same job is still queued
                while not await enqueue_deliveries(redis, [subscription], queue=queue):
                    await asyncio.sleep(0.001)
            async with asyncio.timeout(10):  # without a wake-up: RARELY
                assert await ran.get() == subscription


async def _next_message(pubsub: Any, seconds: float) -> dict[str, Any] | None:
    """The next published message within `seconds` (the subscription's own confirmation, which
    `get_message` answers as None, skipped)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                message = await pubsub.get_message(timeout=seconds)
                if message is not None:
                    return dict(message)
    return None


async def test_the_events_enqueue_wakes_only_when_it_adds_a_job(redis: ArqRedis) -> None:
    async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(wake_channel(EVENTS_QUEUE))
        assert await enqueue_event_batches(redis, [1, 2, 3]) == 1
        message = await _next_message(pubsub, 10)
        assert message is not None and message["channel"] == wake_channel(EVENTS_QUEUE).encode()
        # The same rows again: their job is queued already, nothing added, nobody woken.
        assert await enqueue_event_batches(redis, [1, 2, 3]) == 0
        assert await _next_message(pubsub, 0.5) is None


async def test_a_look_asks_redis_only_about_jobs_the_worker_does_not_run(
    server: PrivateRedis, redis: ArqRedis
) -> None:
    # arq checks every job id it reads in Redis before starting it, its own running jobs
    # included (they stay queued until they end); a look woken at each job's end then spent
    # three round trips on each running job. Here each job is checked once, when it starts, and
    # runs once.
    queue = f"arq:queue:test-look-{uuid.uuid4().hex}"
    jobs = 40
    ran: list[int] = []

    async def work(ctx: dict[str, Any], n: int) -> None:
        await asyncio.sleep(0.01 * (n % 4))  # ending at different times: looks while others run
        ran.append(n)
        wake.job_ended()  # as the service's jobs do (app/worker/settings.py)

    for n in range(jobs):
        await redis.enqueue_job("work", n, _queue_name=queue)
    await redis.config_resetstat()
    async with woken_worker(server, queue, func(work, name="work"), max_jobs=5):
        async with asyncio.timeout(20):
            while len(ran) < jobs:
                await asyncio.sleep(0.01)
    assert sorted(ran) == list(range(jobs))
    stats = await redis.info("commandstats")
    # One claim (a script: `wake._CLAIM`) per job started, where arq sends WATCH, EXISTS,
    # ZSCORE and MULTI/PSETEX/EXEC. (Redis counts the commands a script runs too.) A job that
    # ends between a look's read of the queue and its claim is claimed in vain (the script finds
    # it gone): on a busy machine, one or two. Claiming the running jobs too at every look, as
    # arq checks them, made twice as many here (81).
    claims = stats["cmdstat_eval"]["calls"]
    assert jobs <= claims < jobs * 3 // 2
    assert "cmdstat_watch" not in stats


@contextlib.asynccontextmanager
async def idle_worker(
    redis: ArqRedis, queue: str, function: Any
) -> AsyncIterator[arq.worker.Worker]:
    """An arq worker on `queue` that is not running its loop: the test calls its look itself."""
    worker = arq.worker.Worker(
        functions=[function],
        queue_name=queue,
        redis_pool=redis,
        handle_signals=False,
        keep_result=0,
        max_jobs=2,
    )
    try:
        yield worker
    finally:
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


async def test_a_job_is_claimed_once_and_only_when_arq_would_start_it(redis: ArqRedis) -> None:
    queue = f"arq:queue:test-claim-{uuid.uuid4().hex}"
    ran: list[str] = []

    async def work(ctx: dict[str, Any], name: str) -> None:
        ran.append(name)

    elsewhere = await redis.enqueue_job("work", "elsewhere", _queue_name=queue)
    deferred = await redis.enqueue_job("work", "deferred", _queue_name=queue, _defer_by=60)
    ready = await redis.enqueue_job("work", "ready", _queue_name=queue)
    assert elsewhere is not None and deferred is not None and ready is not None
    # Another worker runs `elsewhere`: its mark is there.
    await redis.psetex(in_progress_key_prefix + elsewhere.job_id, 60_000, b"1")
    gone = b"not-queued-any-more"
    async with idle_worker(redis, queue, func(work, name="work")) as worker:
        slots = worker.sem._value
        job_ids = [elsewhere.job_id, deferred.job_id, gone.decode(), ready.job_id]
        await wake.start_new_jobs(worker, [job_id.encode() for job_id in job_ids])
        assert list(worker.tasks) == [ready.job_id]
        # The mark is arq's: its life is the worker's in-progress timeout.
        life = await redis.pttl(in_progress_key_prefix + ready.job_id)
        assert 0 < life <= worker.in_progress_timeout_s * 1000
        await worker.tasks[ready.job_id]
        assert ran == ["ready"]
        # Its slot is back, and so are those of the jobs not started.
        assert worker.job_counter == 0
        assert worker.sem._value == slots
        # Done, it has left the queue and its mark is gone: a second look starts nothing.
        assert not await redis.exists(in_progress_key_prefix + ready.job_id)
        await wake.start_new_jobs(worker, [ready.job_id.encode()])
        assert ran == ["ready"]
    assert await redis.exists(in_progress_key_prefix + elsewhere.job_id)


async def test_a_claim_redis_refuses_gives_its_slot_back_and_the_next_look_takes_it(
    redis: ArqRedis,
) -> None:
    queue = f"arq:queue:test-refused-{uuid.uuid4().hex}"
    ran: list[str] = []

    async def work(ctx: dict[str, Any], name: str) -> None:
        ran.append(name)

    job = await redis.enqueue_job("work", "refused", _queue_name=queue)
    assert job is not None
    async with idle_worker(redis, queue, func(work, name="work")) as worker:
        slots = worker.sem._value
        await redis.config_set("maxmemory", "1")  # every write refused (noeviction): OOM
        try:
            await wake.start_new_jobs(worker, [job.job_id.encode()])
        finally:
            await redis.config_set("maxmemory", "0")
        assert worker.tasks == {} and worker.job_counter == 0 and worker.sem._value == slots
        await wake.start_new_jobs(worker, [job.job_id.encode()])
        await worker.tasks[job.job_id]
    assert ran == ["refused"]
