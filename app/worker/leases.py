"""Short leases on running jobs, so that a dead worker's jobs are taken up again within seconds.

arq marks a job it starts with `arq:in-progress:<job id>`, which expires after the longest job
timeout + 10 s (55 s by default) and which only the worker that runs the job deletes. A worker
that dies (SIGKILL, OOM, a lost machine) therefore holds its jobs, and the events behind them,
for that long. Every worker shortens, at start and every `RENEW_SECONDS`, any mark longer than
a lease (`LEASE_SECONDS`), whoever set it, and renews the leases of the jobs it runs
(`Leases.held`): a live worker keeps its jobs, and a dead one's marks expire at most
`RENEW_SECONDS` + `LEASE_SECONDS` after its death (or `LEASE_SECONDS` after the next worker
starts, when none ran); then any worker takes the job from the queue (arq leaves a job in the
queue until it finishes).

Two workers cannot apply one event twice: a worker that stalls past its lease may see another
start the same job, and then the database serializes them (the registration's row lock) and the
second finds the event done (every step is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Final

from arq import ArqRedis
from arq.constants import in_progress_key_prefix

from app.core.jobs import RedisError
from app.core.lifecycle import stop_task

log = logging.getLogger(__name__)

LEASE_SECONDS: Final = 10.0
"""A dead worker's jobs are free again at most this long after its last renewal."""
RENEW_SECONDS: Final = 2.0
"""Renewal period: a fifth of the lease, so four renewals may fail (or the event loop stall for 8 s)
before a live job loses it."""

# Every in-progress mark longer than a lease (ARGV[2] ms), shortened to one, server-side in one
# call: marks that arq set for jobs whose worker died before the job shortened its own.
_SHORTEN_LONG_MARKS = """
local cursor, shortened = "0", 0
repeat
  local found = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = found[1]
  for _, key in ipairs(found[2]) do
    if redis.call('PTTL', key) > tonumber(ARGV[2]) then
      redis.call('PEXPIRE', key, ARGV[2])
      shortened = shortened + 1
    end
  end
until cursor == "0"
return shortened
"""


class Leases:
    """The in-progress marks of the jobs this process runs, kept short and renewed."""

    def __init__(self, redis: ArqRedis) -> None:
        self._redis = redis
        self._held: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="job-leases")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    @contextlib.asynccontextmanager
    async def held(self, job_id: str) -> AsyncIterator[None]:
        """Hold `job_id`'s lease while the block runs: renewed every `RENEW_SECONDS`. No Redis
        call here (it was a twentieth of the worker's CPU at a job per event): arq's long mark
        is shortened by the next look at the marks, within `RENEW_SECONDS`, whichever worker
        takes it."""
        self._held[job_id] += 1
        try:
            yield
        finally:
            self._held[job_id] -= 1
            if not self._held[job_id]:
                del self._held[job_id]

    async def _expire(self, job_ids: list[str]) -> None:
        milliseconds = int(LEASE_SECONDS * 1000)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    # PEXPIRE leaves a missing key missing: a mark arq already deleted (the job
                    # finished) is never brought back.
                    pipe.pexpire(in_progress_key_prefix + job_id, milliseconds)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("job leases not renewed (%s); arq's own expiry stands", exc)

    async def shorten_long_marks(self) -> int:
        """Shorten every in-progress mark longer than a lease to one; answers how many."""
        shortened = await self._redis.eval(  # type: ignore[misc]
            _SHORTEN_LONG_MARKS, 0, in_progress_key_prefix + "*", str(int(LEASE_SECONDS * 1000))
        )
        return int(shortened)

    async def _run(self) -> None:
        while True:
            if self._held:
                await self._expire(list(self._held))
            try:
                await self.shorten_long_marks()
            except (RedisError, OSError) as exc:
                log.warning("long job marks not shortened (%s); retried shortly", exc)
            await asyncio.sleep(RENEW_SECONDS)
