"""The one place job names, job ids and the Redis connection settings live.

A leaf module: the API (callbacks, replay) and the worker both enqueue through it, and it imports
neither, so neither package imports the other.

Job ids are derived from the inbox row id, so enqueueing the same row twice while its job is queued
or running is harmless: arq refuses the second. Jobs keep no result, so once a job is done the same
id can be enqueued again (a replay, a sweep after a lost job).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from arq import ArqRedis
from arq.connections import RedisSettings
from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.settings import Settings

PROCESS_EVENT: Final = "process_event"
PROCESS_EVENTS: Final = "process_events"
EVENTS_PER_JOB: Final = 10
"""Callbacks kept together (one group commit) are applied by one `process_events` job of at most
this many: arq's own cost is per job (about half a millisecond of CPU), so a job per callback
spent as much on arq as on the callback. Small enough that the last of a job's events waits only
a few milliseconds behind the others."""
REFRESH_FACTS: Final = "refresh_facts"
DELIVER: Final = "deliver"

EVENTS_QUEUE: Final = default_queue_name
"""The queue of the callbacks' jobs (process_event, refresh_facts) and the crons but the
forecasts': `arq app.worker.WorkerSettings` reads it."""
DELIVERIES_QUEUE: Final = "arq:queue:deliveries"
"""The queue of the subscriptions' `deliver` jobs and the forecasts cron when they run apart
(`DELIVERY_WORKER=apart`, the default): `arq app.worker.DeliveryWorkerSettings` reads it, so
that however many subscribers there are, and however slow they answer, the callbacks' jobs never
wait behind a delivery."""
FACTS_DEFER_SECONDS: Final = 2.0
"""How long a facts fetch waits in the queue: events enqueued meanwhile go first (it is the
low-priority job), and more moves of the same registration in that time cost no extra GET."""


def wake_channel(queue: str) -> str:
    """The Redis pub/sub channel that says jobs were queued on `queue`: every enqueue here
    publishes on it, and the workers of that queue poll when it speaks (app/worker/wake.py)."""
    return "sinch-registrations:jobs:" + queue


REDIS_CONNECT_TIMEOUT_SECONDS: Final = 1.0
REDIS_SOCKET_TIMEOUT_SECONDS: Final = 5.0

log = logging.getLogger(__name__)


def event_job_id(row_id: int) -> str:
    return f"event:{row_id}"


def events_job_id(row_ids: Sequence[int]) -> str:
    """A batch's job id: its first row and its size (rows are kept once, so no two batches of new
    rows share a first row)."""
    return f"events:{row_ids[0]}+{len(row_ids)}"


def delivery_job_id(subscription_id: str) -> str:
    """One job per subscription at a time: while one is queued or running, another is refused."""
    return f"deliver:{subscription_id}"


def facts_job_id(registration_id: str) -> str:
    """One facts fetch per registration at a time: while one is queued, another is refused."""
    return f"facts:{registration_id}"


T = TypeVar("T")

WRITE_REFUSALS: Final = (OutOfMemoryError, ReadOnlyError)
"""Redis answering but refusing writes: full (`maxmemory` reached under `noeviction`; inside
MULTI it refuses every queued command, even DEL) or a read-only replica (after a failover)."""
REFUSAL_LOG_HOLD_SECONDS: Final = 60.0


class _WriteRefusals:
    """One process-wide account of Redis refusing writes, so that the worker says so loudly but
    at most once a minute (not once per command, connection or flip at the edge of maxmemory),
    and says when a refused command finally went through."""

    def __init__(self) -> None:
        self.refused = 0
        self.announced_at: float | None = None
        self.unresolved = False

    def refused_one(self, error: RedisError) -> None:
        self.refused += 1
        now = time.monotonic()
        if self.announced_at is not None and now - self.announced_at < REFUSAL_LOG_HOLD_SECONDS:
            return
        self.announced_at, self.unresolved = now, True
        why = "maxmemory reached" if isinstance(error, OutOfMemoryError) else "read-only replica"
        log.error(
            "Redis refuses writes (%s; %d refused so far); the worker keeps running and retries "
            "until Redis takes them (free memory or raise maxmemory; arq needs maxmemory-policy "
            "noeviction). Callbacks are still kept; the sweep enqueues them afterwards.",
            why,
            self.refused,
        )

    def accepted(self) -> None:
        if not self.unresolved:
            return
        self.unresolved = False
        log.warning("Redis accepts writes again (%d refused commands so far)", self.refused)


write_refusals = _WriteRefusals()


class RideOutRetry(Retry):
    """redis-py's retry, plus: a refused write (`WRITE_REFUSALS`) is retried for as long as Redis
    refuses it, without spending the budget kept for connection errors.

    A full Redis still answers, and frees room only when an operator or an expiry does: giving up
    (arq then ends the worker, and a new one ends again at once) helps nobody, while waiting keeps
    running jobs' bookkeeping (a MULTI that finishes a job) intact until it can be written. Inside
    WATCH, redis-py turns any retried error into WatchError at once, which arq reads as "another
    worker has it"; backing off BEFORE that keeps arq's poll loop from spinning on a full Redis.
    """

    __slots__ = ()

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]
    ) -> T:
        self._backoff.reset()  # type: ignore[no-untyped-call]
        failures = refusals = 0
        while True:
            try:
                result = await do()
            except self._supported_errors as error:
                if isinstance(error, WRITE_REFUSALS):
                    refusals += 1
                    write_refusals.refused_one(error)
                    await asyncio.sleep(self._backoff.compute(refusals))
                    await fail(error)  # may raise (WatchError inside WATCH): arq handles that
                    continue
                failures += 1
                await fail(error)
                if self._retries >= 0 and failures > self._retries:
                    raise
                backoff = self._backoff.compute(failures)
                if backoff > 0:
                    await asyncio.sleep(backoff)
            else:
                if refusals:
                    write_refusals.accepted()
                return result


def mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


def memory_verdict(memory: dict[str, Any]) -> str:
    """ "ok", or why a Redis with this `INFO memory` cannot hold arq's queue: it may evict keys
    (any `maxmemory-policy` but `noeviction`: queued jobs would silently vanish) or it is full.
    Pure; `/readyz` and the worker's start-up both judge by it."""
    # An evicting Redis at its limit evicts rather than refuses: the policy is the news then.
    policy = memory.get("maxmemory_policy")
    if policy is not None and policy != "noeviction":
        return f"evicts keys (maxmemory-policy {policy}); arq needs noeviction"
    used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    if limit and used >= limit:
        return f"full: used {mib(used)} of maxmemory {mib(limit)}, writes are refused"
    return "ok"


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's settings for the worker, made to ride out a Redis outage and a full Redis.

    arq's poll loop lets a Redis error end the worker, so commands are retried instead: through a
    connection outage backing off to 2 s between tries, for about three minutes (start-up waits
    for Redis the same way); while Redis refuses writes (`maxmemory` reached, a read-only replica)
    for as long as that lasts (`RideOutRetry`). Jobs lost with a Redis that restarts empty, and
    callbacks that could not be enqueued, are enqueued by the sweep.
    """
    parsed = RedisSettings.from_dsn(settings.redis_url)
    parsed.conn_timeout = int(REDIS_CONNECT_TIMEOUT_SECONDS) or 1
    parsed.conn_retries = 90
    parsed.conn_retry_delay = 2
    parsed.retry = RideOutRetry(ExponentialBackoff(cap=2.0, base=0.1), retries=90)
    parsed.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError, *WRITE_REFUSALS]
    return parsed


def create_redis(settings: Settings) -> ArqRedis:
    """An arq client that connects lazily, so the API starts (and keeps callbacks) without Redis.

    Timeouts are short: when Redis is down an enqueue fails fast and the sweep catches up later.
    """
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=64,
        timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
    )
    return ArqRedis(pool_or_conn=pool)


# arq's enqueue, for many jobs in one atomic call: a job is added (its key, then its queue entry)
# only when neither its key nor a kept result exists, exactly the check arq makes per job; then,
# when any was added, the queue's workers are woken (`wake_channel`), in the same round trip.
_ENQUEUE_MANY = """
local added = 0
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('EXISTS', ARGV[1] .. id, ARGV[2] .. id) == 0 then
    redis.call('PSETEX', ARGV[1] .. id, expires_extra_ms, ARGV[i + 2])
    redis.call('ZADD', KEYS[1], ARGV[i + 1], id)
    added = added + 1
  end
end
if added > 0 then
  redis.call('PUBLISH', ARGV[3], '1')
end
return added
""".replace("expires_extra_ms", str(expires_extra_ms))


async def _enqueue_many(redis: ArqRedis, jobs: Sequence[tuple[str, str, tuple[Any, ...]]]) -> int:
    """Enqueue `(job id, function, args)` jobs in one Redis round trip, as arq's `enqueue_job`
    would one by one (a job whose id is queued or running is skipped). Answers how many were new;
    raises like `enqueue_event` when Redis cannot be reached."""
    if not jobs:
        return 0
    now = timestamp_ms()
    queue = default_queue_name
    arguments: list[str | bytes | int] = [job_key_prefix, result_key_prefix, wake_channel(queue)]
    for job_id, function, args in jobs:
        arguments += [job_id, now, serialize_job(function, args, {}, None, now)]
    added = await redis.eval(_ENQUEUE_MANY, 1, queue, *arguments)  # type: ignore[arg-type,misc]
    return int(added)


async def enqueue_events(redis: ArqRedis, row_ids: Sequence[int]) -> int:
    """Enqueue processing of many inbox rows, a `process_event` job each, in one Redis round trip;
    answers how many were new. The jobs are the ones `enqueue_event` makes (same ids, same
    payload), so a worker cannot tell them apart. Raises like `enqueue_event` when Redis cannot be
    reached. For rows that need a job of their own: the sweep's, a batch's hand-offs."""
    return await _enqueue_many(
        redis, [(event_job_id(row_id), PROCESS_EVENT, (row_id,)) for row_id in row_ids]
    )


async def enqueue_event_batches(redis: ArqRedis, row_ids: Sequence[int]) -> int:
    """Enqueue processing of newly kept rows in `process_events` jobs of at most `EVENTS_PER_JOB`
    rows each, in kept order, in one Redis round trip. Answers how many jobs were new; raises like
    `enqueue_event` when Redis cannot be reached."""
    batches = [row_ids[i : i + EVENTS_PER_JOB] for i in range(0, len(row_ids), EVENTS_PER_JOB)]
    return await _enqueue_many(
        redis, [(events_job_id(batch), PROCESS_EVENTS, (list(batch),)) for batch in batches]
    )


async def enqueue_event(redis: ArqRedis, row_id: int) -> bool:
    """Enqueue processing of inbox row `row_id`. False when it was already queued.

    Raises `RedisError` (or `OSError`) when Redis cannot be reached; callers decide whether that
    matters (for the callback endpoint it does not: the row waits for the sweep).
    """
    job = await redis.enqueue_job(PROCESS_EVENT, row_id, _job_id=event_job_id(row_id))
    if job is not None:
        await redis.publish(wake_channel(EVENTS_QUEUE), b"1")
    return job is not None


async def enqueue_deliveries(
    redis: ArqRedis, subscription_ids: Sequence[str], *, queue: str = DELIVERIES_QUEUE
) -> int:
    """Enqueue sending what is due for each subscription (`delivery_job_id`) on `queue`. Answers
    how many were new; raises like `enqueue_event` when Redis cannot be reached."""
    return await _enqueue_each(redis, DELIVER, subscription_ids, delivery_job_id, _queue_name=queue)


async def enqueue_facts(redis: ArqRedis, registration_ids: Sequence[str]) -> int:
    """Enqueue a fetch of each registration for its facts, `FACTS_DEFER_SECONDS` from now,
    coalesced per registration (`facts_job_id`). Answers how many were new; raises like
    `enqueue_event` when Redis cannot be reached (the sweep enqueues them later)."""
    return await _enqueue_each(
        redis, REFRESH_FACTS, registration_ids, facts_job_id, _defer_by=FACTS_DEFER_SECONDS
    )


async def _enqueue_each(
    redis: ArqRedis,
    function: str,
    ids: Sequence[str],
    job_id: Callable[[str], str],
    **options: Any,
) -> int:
    """Enqueue `function(id)` for each id, as job `job_id(id)` with arq's `options`, one round
    trip each, then wake the queue's workers. Answers how many were new (not already queued
    under their job id)."""
    added = 0
    for each in ids:
        job = await redis.enqueue_job(function, each, _job_id=job_id(each), **options)
        added += job is not None
    if added:
        await redis.publish(wake_channel(options.get("_queue_name") or EVENTS_QUEUE), b"1")
    return added


__all__ = [
    "DELIVER",
    "DELIVERIES_QUEUE",
    "EVENTS_PER_JOB",
    "EVENTS_QUEUE",
    "PROCESS_EVENT",
    "PROCESS_EVENTS",
    "REFRESH_FACTS",
    "WRITE_REFUSALS",
    "RedisError",
    "RideOutRetry",
    "create_redis",
    "delivery_job_id",
    "enqueue_deliveries",
    "enqueue_event",
    "enqueue_event_batches",
    "enqueue_events",
    "enqueue_facts",
    "event_job_id",
    "events_job_id",
    "facts_job_id",
    "memory_verdict",
    "redis_settings",
    "wake_channel",
]
