"""SIGTERM of the API and of the worker during load: nothing lost, nothing left half-done."""

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


def test_sigterm_of_api_and_worker_during_load(tmp_path: Path, worker_id: str) -> None:
    with running_stack(tmp_path, f"sigterm_{worker_id}") as stack:
        worker = stack.start_api_and_worker()

        async def scenario() -> None:
            load = await make_load(stack, 40)
            api = stack.api
            assert api is not None

            async def stop_api_when_busy() -> None:
                while len(load.answers) < 50:
                    await asyncio.sleep(0.005)
                api.signal(signal.SIGTERM)

            async with SimulatorControl(stack.sim.base_url) as sim:
                # Slow GETs keep the worker busy when it is told to stop.
                await sim.inject_fault("hang", delay_seconds=0.3, count=20, paths="api")
                await asyncio.gather(
                    send(load, stack.api_url, list(load.bodies), concurrency=8),
                    stop_api_when_busy(),
                )
                worker.signal(signal.SIGTERM)
                # uvicorn re-raises the signal once it has shut down: -SIGTERM is its clean exit.
                assert api.stop(timeout=30) in (0, -signal.SIGTERM)
                assert worker.stop(timeout=30) in (0, -signal.SIGTERM)
            # Both ran their shutdown to the end (the API drained its pending commits).
            logs = stack.logs()
            assert '"api stopped"' in logs
            assert '"worker stopped"' in logs

            await assert_every_200_is_kept(stack, load)
            new_url = stack.start_api()
            stack.start_worker()
            await resend_until_kept(load, new_url)
            await assert_converged(stack, load)

        asyncio.run(scenario())
