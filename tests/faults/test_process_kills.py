"""SIGKILL of the API in the middle of a load, and of a worker in the middle of processing."""

from __future__ import annotations

import asyncio
import signal
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


def test_api_killed_mid_load_loses_nothing_answered_200(tmp_path: Path, worker_id: str) -> None:
    with running_stack(tmp_path, f"api_kill_{worker_id}") as stack:
        stack.start_api_and_worker()

        async def scenario() -> None:
            load = await make_load(stack, 40)  # 200 callbacks
            first_api = stack.api
            assert first_api is not None

            async def kill_when_busy() -> None:
                while len(load.answers) < 60:
                    await asyncio.sleep(0.005)
                first_api.signal(signal.SIGKILL)

            await asyncio.gather(
                send(load, stack.api_url, list(load.bodies), concurrency=8), kill_when_busy()
            )
            refused = [a for a in load.answers if a[2] != 200]
            assert refused, "the kill came too late to test anything"
            # Whatever was answered 200 before the kill is kept.
            await assert_every_200_is_kept(stack, load)

            first_api.kill()
            new_url = stack.start_api()
            await resend_until_kept(load, new_url)
            await assert_every_200_is_kept(stack, load)
            await assert_converged(stack, load)

        asyncio.run(scenario())


def test_worker_killed_mid_processing_a_new_one_finishes(tmp_path: Path, worker_id: str) -> None:
    with running_stack(tmp_path, f"worker_kill_{worker_id}") as stack:
        doomed = stack.start_api_and_worker()

        async def scenario() -> None:
            load = await make_load(stack, 20)
            async with SimulatorControl(stack.sim.base_url) as sim:
                # Slow GETs keep jobs in flight when the worker dies.
                await sim.inject_fault("hang", delay_seconds=0.5, count=15, paths="api")
                await send(load, stack.api_url, list(load.bodies), concurrency=8)
                assert not load.unanswered()
                for _ in range(200):
                    if (await sim.stats()).get("getRegistration", 0) >= 3:
                        break
                    await asyncio.sleep(0.02)
            doomed.signal(signal.SIGKILL)
            doomed.kill()
            stack.start_worker()
            await assert_converged(stack, load)

        asyncio.run(scenario())
