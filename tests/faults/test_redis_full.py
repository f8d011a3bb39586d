"""Redis full (`maxmemory` reached under `noeviction`) and Redis evicting keys, with real processes.

Full: every callback is still kept and answered 200; the workers (one running when Redis fills, one
started while it is full, whose first act is arq's health record write) keep running through the
refusals, and once memory is freed the same processes process every event. `/readyz` answers 503
saying why, and the API logs it once however often it is probed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.support.processes import ServiceProcess, wait_until
from tests.support.stack import (
    Stack,
    assert_converged,
    assert_every_200_is_kept,
    make_load,
    running_stack,
    send,
)

REFUSED = '"Redis refuses writes'
ALL_OK = {"database": "ok", "redis": "ok", "callbackSecret": "ok"}


def _alive(worker: ServiceProcess) -> bool:
    return worker.process is not None and worker.process.poll() is None


def _readyz(stack: Stack) -> tuple[int, dict[str, str]]:
    response = httpx.get(stack.api_url + "/readyz", timeout=10)
    checks: dict[str, str] = response.json()["checks"]
    return response.status_code, checks


def _api_log_lines(stack: Stack, message: str) -> list[str]:
    assert stack.api is not None
    text = stack.api.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if message in line]


def test_full_redis_workers_ride_it_out_and_readyz_says_so(tmp_path: Path, worker_id: str) -> None:
    with running_stack(tmp_path, f"redis_full_{worker_id}") as stack:
        running = stack.start_api_and_worker()

        async def scenario() -> None:
            load = await make_load(stack, 12)  # 48 callbacks
            event_ids = list(load.bodies)
            third = len(event_ids) // 3
            await send(load, stack.api_url, event_ids[:third])
            assert _readyz(stack) == (200, ALL_OK)

            stack.redis.fill()
            await send(load, stack.api_url, event_ids[third : 2 * third])
            # A worker started now writes arq's health record first: refused at once.
            started_full = stack.start_worker()
            workers = [running, started_full]
            # Each worker meets a refusal within a few polls (the running one on its next cron
            # enqueue). Before the fix, arq ended each of them right then.
            wait_until(
                lambda: (
                    not all(_alive(w) for w in workers)
                    or all(REFUSED in w.log_path.read_text(errors="replace") for w in workers)
                ),
                timeout=30,
                what="both workers to meet the full Redis",
            )
            assert all(_alive(w) for w in workers), "a worker died on a full Redis"
            await send(load, stack.api_url, event_ids[2 * third :])
            assert not load.unanswered(), "a callback was refused while Redis was full"
            await assert_every_200_is_kept(stack, load)

            for _ in range(3):
                status, checks = _readyz(stack)
                assert status == 503
                assert checks["database"] == "ok"
                assert checks["redis"].startswith("full: "), checks
                assert "maxmemory" in checks["redis"]
            assert len(_api_log_lines(stack, "Redis cannot hold the job queue")) == 1

            stack.redis.free()
            # Ready again once Redis has room (the queued retries land first: a bounded wait).
            wait_until(
                lambda: _readyz(stack) == (200, ALL_OK), timeout=15, what="/readyz ready again"
            )
            # The same two processes, never restarted, process everything.
            await assert_converged(stack, load)
            assert all(_alive(w) for w in workers)
            assert stack.workers == workers
            assert len(_api_log_lines(stack, "Redis can hold the job queue again")) == 1

        asyncio.run(scenario())


def test_evicting_redis_is_not_ready_and_the_worker_says_so(tmp_path: Path, worker_id: str) -> None:
    with running_stack(tmp_path, f"redis_evicts_{worker_id}") as stack:
        stack.start_api()
        with stack.redis.client() as client:
            client.config_set("maxmemory", 64 << 20)
            client.config_set("maxmemory-policy", "allkeys-lru")
        status, checks = _readyz(stack)
        assert status == 503
        assert checks["redis"] == "evicts keys (maxmemory-policy allkeys-lru); arq needs noeviction"
        worker = stack.start_worker()
        wait_until(
            lambda: "maxmemory-policy is allkeys-lru" in worker.log_path.read_text(),
            timeout=10,
            what="the worker to warn about eviction",
        )
        lines = [
            json.loads(line)
            for line in worker.log_path.read_text().splitlines()
            if "maxmemory-policy is" in line
        ]
        assert [line["level"] for line in lines] == ["error"]

        with stack.redis.client() as client:
            client.config_set("maxmemory-policy", "volatile-ttl")
        assert _readyz(stack)[1]["redis"].startswith("evicts keys (maxmemory-policy volatile-ttl)")
        with stack.redis.client() as client:
            client.config_set("maxmemory-policy", "noeviction")
        assert _readyz(stack) == (200, ALL_OK)
