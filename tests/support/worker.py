"""The worker's own start-up, for tests that run its job functions in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from app.jobs import create_redis
from app.settings import Settings
from app.worker.context import WorkerContext
from app.worker.settings import build_worker_settings


@asynccontextmanager
async def worker_context(settings: Settings) -> AsyncIterator[WorkerContext]:
    """The context the real worker builds at start-up (its own `on_startup`), shut down after."""
    worker_settings: Any = build_worker_settings(settings)
    ctx: WorkerContext = {"redis": create_redis(settings), "job_try": 1}
    await worker_settings.on_startup(ctx)
    try:
        yield ctx
    finally:
        # Bounded: a shutdown that does not end (seen stalling whole runs in this teardown) is
        # cancelled after 15 s instead of holding the test run.
        shutdown = asyncio.ensure_future(worker_settings.on_shutdown(ctx))
        done, _ = await asyncio.wait({shutdown}, timeout=15)
        if not done:
            shutdown.cancel()
        await ctx["redis"].aclose()
