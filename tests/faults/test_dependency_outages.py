"""Redis stopped, PostgreSQL refusing connections, Sinch failing: nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from devtools.simulator import SimulatorControl
from tests.support.stack import (
    assert_converged,
    assert_every_200_is_kept,
    make_load,
    resend_until_kept,
    running_stack,
    send,
)


def test_redis_stopped_during_load_then_started(tmp_path: Path, worker_id: str) -> None:
    with running_stack(tmp_path, f"redis_stop_{worker_id}") as stack:
        stack.start_api_and_worker()

        async def scenario() -> None:
            load = await make_load(stack, 30)
            event_ids = list(load.bodies)
            third = len(event_ids) // 3
            await send(load, stack.api_url, event_ids[:third])
            stack.redis.stop()
            await send(load, stack.api_url, event_ids[third : 2 * third], pause=0.01)
            stack.redis.start()  # empty: the queued jobs are gone, the inbox is not
            # The worker retries Redis commands through an outage, but one that Redis drops inside
            # a WATCH (arq's job start) ends it; its supervisor starts a new one.
            stack.supervised = True
            await send(load, stack.api_url, event_ids[2 * third :])
            # The callback endpoint never needed Redis to answer.
            assert not load.unanswered()
            await assert_every_200_is_kept(stack, load)
            await assert_converged(stack, load)

        asyncio.run(scenario())


def test_postgres_refusing_connections_answers_503_never_200(
    tmp_path: Path, worker_id: str
) -> None:
    with running_stack(tmp_path, f"pg_outage_{worker_id}", proxy=True) as stack:
        stack.start_api_and_worker()
        assert stack.proxy is not None
        proxy = stack.proxy

        async def scenario() -> None:
            load = await make_load(stack, 30)
            event_ids = list(load.bodies)
            third = len(event_ids) // 3
            await send(load, stack.api_url, event_ids[:third])

            proxy.block()
            outage_start = time.monotonic()
            await send(load, stack.api_url, event_ids[third : 2 * third], concurrency=4)
            outage_end = time.monotonic()
            during = [a for a in load.answers if outage_start <= a[0] <= outage_end]
            assert during, "nothing was sent during the outage"
            assert {outcome for _, _, outcome in during} == {503}, "answered other than 503"
            proxy.unblock()

            await send(load, stack.api_url, event_ids[2 * third :])
            await resend_until_kept(load, stack.api_url)  # it recovered by itself
            await assert_every_200_is_kept(stack, load)
            await assert_converged(stack, load)

        asyncio.run(scenario())


def test_sinch_failing_then_recovering_loses_nothing_and_fails_nothing(
    tmp_path: Path, worker_id: str
) -> None:
    with running_stack(
        tmp_path,
        f"sinch_faults_{worker_id}",
        SINCH_TIMEOUT_SECONDS="1",
        JOB_MAX_TRIES="12",
        JOB_RETRY_BASE_SECONDS="0.3",
    ) as stack:
        stack.start_api_and_worker()

        async def scenario() -> None:
            load = await make_load(stack, 15)
            async with SimulatorControl(stack.sim.base_url) as sim:
                await sim.inject_fault("status", status=503, count=15, paths="api")
                await sim.inject_fault("status", status=429, retry_after=1, count=10, paths="api")
                await sim.inject_fault("hang", delay_seconds=2.5, count=6, paths="api")
                await send(load, stack.api_url, list(load.bodies))
                assert not load.unanswered()
                await assert_converged(stack, load)  # every event processed, none failed
                stats = await sim.stats()
            assert stats.get("faultsInjected", 0) >= 25

        asyncio.run(scenario())
