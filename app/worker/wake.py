"""arq's queue poll, woken instead of ticking.

arq looks at its queue every `poll_delay`. To keep a callback's wait for its job short we looked
every 10 ms, and an idle worker then spent about a tenth of a core on a hundred Redis reads a
second (two workers: a fifth, on a machine of two cores).
Here a worker looks:

- when jobs were queued on its queue: every enqueue publishes on the queue's channel
  (`app.core.jobs.wake_channel`), in the same round trip as the enqueue where it can;
- when one of its own jobs has ended (`job_ended`): a slot is free and more may wait;
- at least every `poll_delay` (`FALLBACK_SECONDS`): deferred jobs, arq's retries, the crons, and
  news missed while the subscription was down;
- never more often than every `MIN_INTERVAL_SECONDS`, however many wake-ups come: under load
  it polls as often as before, never more.

A wake-up only says "look now": the queue in Redis stays the record, so a lost message costs at
most `FALLBACK_SECONDS`, never a job.

A look skips the jobs this worker is running (`start_new_jobs`). arq keeps a job in its queue
until it ends, and its look asks Redis about every job id it reads (WATCH, EXISTS, ZSCORE: three
round trips) before finding that one in progress. With 30 jobs running and a look after each
job's end, that was some 90 round trips per job started: about half the worker's CPU went to
them (bench/README.md, "Where the worker's CPU goes").

A job it starts is claimed in one round trip (`_CLAIM`, a script), where arq spends four (WATCH,
EXISTS, ZSCORE, then MULTI/PSETEX/EXEC). The checks and the mark are arq's: not started when
another worker's mark is there, when the job has left the queue, or when it is deferred. A
script runs atomically, which is what arq's WATCH ensures. At 200 callbacks/s a job carries one
or two events, and each round trip is a wake-up of Redis: on a busy machine the worker lost its
core at each (bench/README.md).

arq offers no hook for this: its `Worker.main` iterates `arq.worker.poll(poll_delay)`, and
`install()` puts `woken_poll` in its place and `start_new_jobs` in `Worker.start_jobs`'s (arq is
pinned in uv.lock; tests/worker/test_wake.py fails if a new arq stops calling them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Final

import arq.worker
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.changes.signal import Signal
from app.core.jobs import wake_channel

log = logging.getLogger(__name__)

FALLBACK_SECONDS: Final = 0.25
"""The workers' `poll_delay`: the longest a job can wait when no wake-up says it is there (a
deferred job, a retry, a cron's window of 0.5 s)."""
MIN_INTERVAL_SECONDS: Final = 0.01
"""The shortest time between two looks at the queue (the former fixed poll)."""

_signal: Signal | None = None
"""This process's wake-ups (one arq worker per process); None until `start`, and then the poll
ticks every `poll_delay` as arq's own does."""


def start(redis: Redis, queue: str) -> Signal:
    """Listen for wake-ups of `queue` (the worker's start-up); answers the signal to stop."""
    global _signal
    _signal = Signal(redis, channel=wake_channel(queue), poll_seconds=FALLBACK_SECONDS)
    _signal.start()
    return _signal


def job_ended() -> None:
    """One of this worker's jobs ended: look at the queue soon (a slot is free)."""
    if _signal is not None:
        _signal.announce()


async def woken_poll(step: float = FALLBACK_SECONDS) -> AsyncGenerator[float, None]:
    """arq's `poll(step)` (it yields the time since the start before each look), except that it
    waits for a wake-up, at most `step`, between looks, and at least `MIN_INTERVAL_SECONDS`."""
    loop = asyncio.get_running_loop()
    start_time = loop.time()
    while True:
        before = loop.time()
        token = _signal.token() if _signal is not None else 0
        yield before - start_time
        if _signal is None:
            await asyncio.sleep(max(0.0, step - (loop.time() - before)))
            continue
        await _signal.wait(token, step - (loop.time() - before))
        await asyncio.sleep(max(0.0, MIN_INTERVAL_SECONDS - (loop.time() - before)))


# KEYS: the job's in-progress mark, the queue; ARGV: the job id, now (ms), the mark's life (ms).
# The job's score when this call marked it in progress; nil (None) when it is not to start here.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return nil end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""


async def _claim(worker: arq.worker.Worker, job_id: str) -> int | None:
    """Mark `job_id` in progress, as arq's `start_jobs` does, in one round trip: its score when
    it is to start here; None when another worker runs it, it has left the queue, or it is
    deferred (its score lies ahead)."""
    score = await worker.pool.eval(  # type: ignore[misc]
        _CLAIM,
        2,
        in_progress_key_prefix + job_id,
        worker.queue_name,
        job_id,
        str(timestamp_ms()),
        str(int(worker.in_progress_timeout_s * 1000)),
    )
    return None if score is None else int(float(score))


async def start_new_jobs(worker: arq.worker.Worker, job_ids: list[bytes]) -> None:
    """arq's `Worker.start_jobs` (0.28) for the `job_ids` this worker is not running already,
    each claimed in one round trip (`_claim`).

    A job this worker runs holds its "in progress" mark in Redis, so arq's own check would skip
    it anyway; here it is skipped without asking. A task that has ended counts as not running:
    arq forgets ended tasks only after this look, and a job queued again under the same id (a
    subscription's `deliver`) must start now, as arq would start it. Another worker's jobs are
    still checked in Redis, as arq does: what one worker knows of its own jobs decides nothing
    else. Slots are taken and given back as arq does (its semaphore and job counter)."""
    running = {job_id for job_id, task in worker.tasks.items() if not task.done()}
    for job_id_b in job_ids:
        job_id = job_id_b.decode()
        if job_id in running:
            continue
        await worker.sem.acquire()
        if worker.job_counter >= worker.max_jobs:
            worker.sem.release()
            return
        worker.job_counter += 1
        try:
            score = await _claim(worker, job_id)
        except ResponseError as exc:
            # Refused by Redis (out of memory, read-only after a failover): arq too skips the
            # job then, and looks again at the next poll.
            log.warning("job %s not claimed: %s", job_id, exc)
            score = None
        except BaseException:
            worker.job_counter -= 1
            worker.sem.release()
            raise
        if score is None:
            worker.job_counter -= 1
            worker.sem.release()
            log.debug("job %s already running elsewhere, done or deferred", job_id)
            continue
        task = worker.loop.create_task(worker.run_job(job_id, score))
        task.add_done_callback(lambda _: worker._release_sem_dec_counter_on_complete())
        worker.tasks[job_id] = task


def install() -> None:
    """Make arq's workers in this process poll with `woken_poll`, and look only at jobs they do
    not run already (`start_new_jobs`)."""
    arq.worker.poll = woken_poll  # type: ignore[attr-defined]
    arq.worker.Worker.start_jobs = start_new_jobs  # type: ignore[method-assign, assignment]
