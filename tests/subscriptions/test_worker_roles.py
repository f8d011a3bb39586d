"""Who delivers: by default (`DELIVERY_WORKER=apart`) only the delivery worker
(`arq app.worker.DeliveryWorkerSettings`), so the callbacks' worker never runs a delivery; with
`DELIVERY_WORKER=shared` the one worker does both.

Real processes, as in test_deliveries.py: the simulator as Sinch, the API and the workers as child
processes, a private Redis, PostgreSQL; a receiver on loopback checking every signature.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.jobs import DELIVER, DELIVERIES_QUEUE, PROCESS_EVENT
from app.core.settings import Settings
from app.worker.settings import (
    DELIVERY_MAX_JOBS,
    build_delivery_worker_settings,
    build_worker_settings,
)
from devtools.simulator import SimulatorControl
from tests.conftest import make_settings
from tests.subscriptions.test_deliveries import (
    World,
    all_delivered,
    assert_genuine,
    deliveries,
    latest,
    play,
    receiving,
    subscribe,
)
from tests.support.stack import API_TOKEN, Stack, running_stack

pytestmark = [pytest.mark.slow]

SETTLE_SECONDS = 3.0
"""Three of the dispatcher's looks: a delivery due this long would have been sent by a worker
that sends deliveries."""


def _names(worker_settings: Any) -> set[str]:
    return {function.name for function in worker_settings.functions}


def _crons(worker_settings: Any) -> set[str]:
    return {job.name for job in getattr(worker_settings, "cron_jobs", [])}


FORECASTS = "cron:refresh_forecasts"


def test_each_worker_runs_only_its_own_jobs() -> None:
    apart = make_settings("postgresql+asyncpg://unused/none", "redis://127.0.0.1:1/0")
    assert apart.delivery_worker == "apart"  # the default, as deployed
    events = build_worker_settings(apart)
    assert DELIVER not in _names(events) and PROCESS_EVENT in _names(events)
    assert getattr(events, "queue_name", None) is None  # arq's default queue: the callbacks'
    # The forecasts' CPU-bound work runs in the lower-priority delivery worker, never beside the
    # callbacks; the callbacks' own crons (the sweep) stay with them.
    assert FORECASTS not in _crons(events) and "cron:sweep" in _crons(events)
    delivering = build_delivery_worker_settings(apart)
    assert _names(delivering) == {DELIVER}
    assert delivering.queue_name == DELIVERIES_QUEUE
    assert _crons(delivering) == {FORECASTS}
    # The dispatcher fills DELIVERY_MAX_JOBS slots; the cron has one more of its own.
    assert delivering.max_jobs == DELIVERY_MAX_JOBS + 1

    shared: Settings = apart.model_copy(update={"delivery_worker": "shared"})
    one = build_worker_settings(shared)
    assert {DELIVER, PROCESS_EVENT} <= _names(one)
    assert {FORECASTS, "cron:sweep"} <= _crons(one)


def _stack(tmp_path: Path, name: str, **env: str) -> Any:
    return running_stack(
        tmp_path,
        name,
        SUBSCRIPTION_ALLOWED_HOSTS="127.0.0.1",
        # The receivers are on loopback, which a delivery may reach only when allowed.
        SUBSCRIPTION_ALLOWED_NETWORKS="127.0.0.0/8",
        **env,
    )


async def _play_one_subscribed(
    stack: Stack, between: Callable[[httpx.AsyncClient, str, list[str]], Awaitable[None]]
) -> None:
    """Subscribe a receiver, play one registration's lifecycle through the API and the worker,
    run `between` (the API, the subscription's id, the registrations), then check that the
    receiver got every change, signed and as the feed says."""
    world = World(stack)
    async with (
        httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
        ) as api,
        receiving() as receiver,
        SimulatorControl(stack.sim.base_url) as sim,
    ):
        created = await subscribe(api, world, receiver)
        after = await latest(api)
        rids = await play(world, sim, [["IN_PROGRESS", "APPROVED"]])
        await between(api, created["id"], rids)
        items = await all_delivered(api, receiver, created["id"], rids, after)
        assert_genuine(receiver, items, rids)


def test_apart_the_callbacks_worker_delivers_nothing(tmp_path: Path, worker_id: str) -> None:
    with _stack(tmp_path, f"roles_apart_{worker_id}") as stack:
        stack.start_api_and_worker()

        async def nothing_sent_until_a_delivery_worker_runs(
            api: httpx.AsyncClient, subscription_id: str, rids: list[str]
        ) -> None:
            # Every callback applied by the worker: the changes are recorded, their deliveries
            # owed, none sent...
            await asyncio.sleep(SETTLE_SECONDS)
            owed = await deliveries(api, subscription_id)
            assert owed, "no delivery was recorded for the changes"
            assert {(d["state"], d["attempts"]) for d in owed} == {("pending", 0)}
            # ... until a delivery worker runs, at a lower CPU priority than the callbacks'
            # worker (DELIVERY_WORKER_NICE).
            delivering = stack.start_delivery_worker()
            [events_worker] = stack.workers
            assert delivering.process is not None and events_worker.process is not None
            nice = os.getpriority(os.PRIO_PROCESS, delivering.process.pid)
            assert nice - os.getpriority(os.PRIO_PROCESS, events_worker.process.pid) == 10

        asyncio.run(_play_one_subscribed(stack, nothing_sent_until_a_delivery_worker_runs))


def test_shared_the_one_worker_delivers_too(tmp_path: Path, worker_id: str) -> None:
    with _stack(tmp_path, f"roles_shared_{worker_id}", DELIVERY_WORKER="shared") as stack:
        stack.start_api_and_worker()

        async def nothing_more(
            api: httpx.AsyncClient, subscription_id: str, rids: list[str]
        ) -> None:
            return None

        asyncio.run(_play_one_subscribed(stack, nothing_more))
