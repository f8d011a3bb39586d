"""The worker's own start-up, for tests that run its job functions in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from app.core.jobs import create_redis
from app.core.settings import Settings
from app.worker.context import WorkerContext
from app.worker.settings import build_worker_settings
from tests.support.tasks import pending_tasks

SHUTDOWN_SECONDS = 30.0
"""`on_shutdown` bounds each of its steps (app/worker/settings.py); this bounds the whole."""


@asynccontextmanager
async def worker_context(settings: Settings) -> AsyncIterator[WorkerContext]:
    """The context the real worker builds at start-up (its own `on_startup`), shut down after."""
    worker_settings: Any = build_worker_settings(settings)
    ctx: WorkerContext = {"redis": create_redis(settings), "job_try": 1}
    await worker_settings.on_startup(ctx)
    try:
        yield ctx
    finally:
        # Bounded: a shutdown that does not end is cancelled instead of holding the test run, and
        # the test fails, naming the tasks still running (a worker that would never exit).
        shutdown = asyncio.ensure_future(worker_settings.on_shutdown(ctx))
        done, _ = await asyncio.wait({shutdown}, timeout=SHUTDOWN_SECONDS)
        stuck = "" if done else pending_tasks()
        if not done:
            shutdown.cancel()
        await ctx["redis"].aclose()
        if stuck:
            raise AssertionError(
                f"the worker's on_shutdown did not end in {SHUTDOWN_SECONDS} s:\n{stuck}"
            )
