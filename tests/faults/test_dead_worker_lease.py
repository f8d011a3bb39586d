"""A worker SIGKILLed while it holds jobs: how long the in-progress leases keep those events from
any other worker, and that a second worker processes them once the leases expire.

arq marks a started job with an `arq:in-progress:<job id>` key whose expiry is the longest job
timeout + 10 s (55 s by default); a worker that dies never deletes it, so nobody runs the job
before it expires. The worker shortens it to `LEASE_SECONDS` and renews it while the job runs
(app/worker/leases.py).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from app.worker.leases import LEASE_SECONDS, RENEW_SECONDS
from devtools.simulator import SimulatorControl
from tests.support.stack import Load, Stack, assert_converged, make_load, running_stack, send

LEASE_PREFIX = "arq:in-progress:event:"


async def _kill_while_a_get_hangs(stack: Stack, registrations: int) -> tuple[Load, dict[str, int]]:
    """Send the callbacks of `registrations` lifecycles while every Sinch GET hangs, SIGKILL the
    only worker as soon as one GET has arrived (its job is then running), and answer the load and
    the leases left behind: job id -> milliseconds to live."""
    [worker] = stack.workers
    load = await make_load(stack, registrations)
    async with SimulatorControl(stack.sim.base_url) as sim:
        await sim.inject_fault("hang", delay_seconds=60, count=1000, paths="api")
        await send(load, stack.api_url, list(load.bodies))
        assert not load.unanswered()
        for _ in range(500):
            if (await sim.stats()).get("getRegistration", 0) >= 1:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the worker never asked Sinch")
        worker.signal(signal.SIGKILL)
        worker.kill()
        stack.workers.remove(worker)
        await sim.clear_faults()
    return load, _leases(stack)


def _leases(stack: Stack) -> dict[str, int]:
    """The events' in-progress marks: job id -> milliseconds to live."""
    with stack.redis.client() as client:
        keys = [key.decode() for key in client.scan_iter(LEASE_PREFIX + "*")]
        return {key.removeprefix("arq:in-progress:"): int(client.pttl(key)) for key in keys}


def test_a_dead_workers_jobs_are_held_at_most_a_lease(tmp_path: Path, worker_id: str) -> None:
    # JOB_TIMEOUT_SECONDS empty: the default (45 s, so arq's own mark would be 55 s), as deployed.
    with running_stack(tmp_path, f"lease_default_{worker_id}", JOB_TIMEOUT_SECONDS="") as stack:
        stack.start_api_and_worker()

        async def scenario() -> None:
            load, leases = await _kill_while_a_get_hangs(stack, 2)
            killed_at = time.monotonic()
            assert leases, "the dead worker held no job"
            # A job that ran a while holds a lease, not arq's 55 s mark; a younger one keeps
            # arq's mark until a live worker shortens it, at its start.
            stack.start_worker()
            deadline = time.monotonic() + RENEW_SECONDS + 10
            while (longest := max(_leases(stack).values(), default=0)) > LEASE_SECONDS * 1000:
                assert time.monotonic() < deadline, f"a mark of {longest} ms was left as it was"
                await asyncio.sleep(0.1)
            # Including the held ones: each is run again once its lease expires.
            await assert_converged(stack, load)
            print(f"every event processed {time.monotonic() - killed_at:.1f} s after the kill")
            with stack.redis.client() as client:
                assert not list(client.scan_iter(LEASE_PREFIX + "*"))

        asyncio.run(scenario())
