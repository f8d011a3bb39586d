"""A tiny arq worker for bench/worker.py: one async no-op job, our `max_jobs`, the same Redis.

Run as `arq bench.worker_noop.WorkerSettings` from the repository root. Configured by environment:
- `BENCH_REDIS_URL`: the Redis database of the queue (required);
- `BENCH_STATS_FILE`: where, on shutdown, to write JSON {jobs, first_start, last_end} (wall-clock
  seconds since the epoch), so that the rate is timed inside the worker without a Redis round trip
  per job;
- `BENCH_POLL_DELAY`: arq's `poll_delay` in seconds (unset: arq's default, as the service uses);
- `BENCH_JOB_LOGS=0`: silence arq's two INFO lines per job (start and end), which cost a good
  part of arq's own time per job.

The job itself does nothing but note the time: what is measured is arq's own cost per job.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from arq.connections import RedisSettings

MAX_JOBS = 20  # app/worker/settings.py: MAX_JOBS
NOOP = "noop"

_stats: dict[str, float] = {"jobs": 0, "first_start": 0.0, "last_end": 0.0}


async def noop(ctx: dict[str, Any], n: int) -> None:
    now = time.time()
    if not _stats["first_start"]:
        _stats["first_start"] = now
    _stats["jobs"] += 1
    _stats["last_end"] = now


def _write_stats() -> None:
    path = os.environ.get("BENCH_STATS_FILE")
    if path:
        Path(path).write_text(json.dumps(_stats))


async def on_startup(ctx: dict[str, Any]) -> None:
    if os.environ.get("BENCH_JOB_LOGS") == "0":
        logging.getLogger("arq.worker").setLevel(logging.WARNING)


async def on_shutdown(ctx: dict[str, Any]) -> None:
    _write_stats()


def _attributes() -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "functions": [noop],
        "redis_settings": RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"]),
        "max_jobs": MAX_JOBS,
        "keep_result": 0,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "handle_signals": True,
        "health_check_interval": 30,
    }
    poll_delay = os.environ.get("BENCH_POLL_DELAY")
    if poll_delay:
        attributes["poll_delay"] = float(poll_delay)
    return attributes


if os.environ.get("BENCH_UVLOOP") == "1":  # the event loop the service's worker runs on
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

WorkerSettings = (
    type("WorkerSettings", (), _attributes()) if "BENCH_REDIS_URL" in os.environ else None
)
