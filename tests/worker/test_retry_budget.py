"""Retries of an event are owned once: by its job (arq `Retry`), never also by the Sinch client.

While Sinch answers every GET with an error, one doubtful event costs exactly `JOB_MAX_TRIES` GETs
(the README's worst case) and ends `failed:sinch_unavailable`. The job function is run as arq runs
it: again, with `job_try` one higher, each time it raises `Retry`, up to arq's own `max_tries`
backstop; the deferral is not waited for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from arq import Retry

from app.core.jobs import PROCESS_EVENT, create_redis
from app.core.settings import Settings
from app.main import create_app
from app.worker.context import WorkerContext
from app.worker.settings import build_worker_settings
from app.worker.tasks import process_event
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.support.reads import events
from tests.support.servers import serve
from tests.worker.conftest import sim_settings
from tests.worker.test_process_event import deliver, gets

DEFAULT_JOB_MAX_TRIES: int = Settings.model_fields["job_max_tries"].default


@pytest.fixture(params=[1, 3, DEFAULT_JOB_MAX_TRIES], ids=lambda tries: f"job_max_tries={tries}")
def settings(
    request: pytest.FixtureRequest, sim_server: SimulatorServer, database_url: str, redis_url: str
) -> Settings:
    # The client's own default attempts (SINCH_MAX_ATTEMPTS unset): the event job must not use them.
    return sim_settings(sim_server, database_url, redis_url).model_copy(
        update={"job_max_tries": request.param}
    )


@pytest.fixture
async def api_url(settings: Settings) -> AsyncIterator[str]:
    async with serve(create_app(settings)) as base_url:
        yield base_url


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[tuple[Any, WorkerContext]]:
    """The worker's settings class and the context its own `on_startup` builds."""
    worker_settings: Any = build_worker_settings(settings)
    ctx: WorkerContext = {"redis": create_redis(settings)}
    await worker_settings.on_startup(ctx)
    try:
        yield worker_settings, ctx
    finally:
        await worker_settings.on_shutdown(ctx)
        await ctx["redis"].aclose()


async def run_as_arq(
    worker_settings: Any, ctx: WorkerContext, row_id: int
) -> tuple[str, list[Retry]]:
    """Run `process_event` for `row_id` as arq would: tried again while it raises `Retry`, at most
    the `max_tries` arq was given for it. Answers the outcome and the retries asked for."""
    [job] = [f for f in worker_settings.functions if f.name == PROCESS_EVENT]
    retries: list[Retry] = []
    for job_try in range(1, job.max_tries + 1):
        ctx["job_try"] = job_try
        try:
            return await process_event(ctx, row_id), retries
        except Retry as retry:
            retries.append(retry)
    raise AssertionError(f"still retrying after arq's {job.max_tries} tries")


async def doubtful_event(sim: SimulatorControl, api_url: str, settings: Settings) -> int:
    """The inbox row of a callback for a registration we do not know yet: it needs a GET."""
    doc = await sim.create_registration()
    [row_id] = await deliver(
        sim, api_url, settings, [e["eventId"] for e in await sim.events(doc["id"])]
    )
    return row_id


async def test_sinch_unavailable_costs_job_max_tries_gets_per_event(
    sim: SimulatorControl,
    api_url: str,
    settings: Settings,
    worker: tuple[Any, WorkerContext],
) -> None:
    worker_settings, ctx = worker
    row_id = await doubtful_event(sim, api_url, settings)
    await sim.inject_fault("status", status=503, count=10_000, paths="api")
    before = await gets(sim)

    outcome, retries = await run_as_arq(worker_settings, ctx, row_id)

    assert outcome == "failed:sinch_unavailable"
    assert await gets(sim) - before == settings.job_max_tries
    assert len(retries) == settings.job_max_tries - 1
    [event] = await events(settings)
    assert (event.state, event.outcome) == ("failed", "failed:sinch_unavailable")


@pytest.mark.parametrize("settings", [3], indirect=True, ids=["job_max_tries=3"])
async def test_the_jobs_retry_honours_retry_after_with_one_get_per_try(
    sim: SimulatorControl,
    api_url: str,
    settings: Settings,
    worker: tuple[Any, WorkerContext],
) -> None:
    _, ctx = worker
    row_id = await doubtful_event(sim, api_url, settings)
    # Shorter than the client's own deadline: the old in-client retry would have slept on it.
    await sim.inject_fault("status", status=429, retry_after=7, count=10_000, paths="api")
    before = await gets(sim)

    ctx["job_try"] = 1
    with pytest.raises(Retry) as caught:
        await process_event(ctx, row_id)

    assert await gets(sim) - before == 1
    # arq's `Retry` keeps the deferral in milliseconds.
    assert timedelta(milliseconds=caught.value.defer_score or 0) >= timedelta(seconds=7)
