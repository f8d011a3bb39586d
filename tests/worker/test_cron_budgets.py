"""Every job fits the job timeout (arq's in-progress lease is sized by it): the Sinch client's
deadline in the worker and the reconcile cron's own budget, against the simulator over HTTP."""

from __future__ import annotations

import asyncio

import pytest

from app.core.settings import Settings
from app.registrations import repository
from app.registrations.reconcile import WATERMARK
from app.sinch.errors import SinchRetryableError
from app.worker.context import WorkerContext
from app.worker.tasks import cron_budget, reconcile_changes
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.worker.conftest import sim_settings

JOB_TIMEOUT = 2


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    return sim_settings(sim_server, database_url, redis_url, job_timeout_seconds=JOB_TIMEOUT)


async def test_a_hanging_sinch_get_ends_before_the_job_timeout(
    worker_ctx: WorkerContext, sim: SimulatorControl
) -> None:
    registration = await sim.create_registration()
    await sim.inject_fault("hang", delay_seconds=30, count=100, paths="api")
    sinch = worker_ctx["sinch"]
    assert sinch is not None
    # As arq bounds the job: the client must give up on its own first (our retryable error, noted
    # on the event and retried with backoff), not be cut off by the job's timeout.
    async with asyncio.timeout(JOB_TIMEOUT):
        with pytest.raises(SinchRetryableError, match="deadline exceeded"):
            await sinch.get_registration(registration["id"])


async def test_reconcile_stops_at_its_budget_and_keeps_the_watermark(
    worker_ctx: WorkerContext, sim: SimulatorControl
) -> None:
    await sim.create_registration()
    # Each list request (one per registration type) takes most of the budget.
    await sim.inject_fault("hang", delay_seconds=0.9, count=100, paths="api")
    assert cron_budget(worker_ctx) < JOB_TIMEOUT
    assert await reconcile_changes(worker_ctx) == 0
    async with worker_ctx["sessionmaker"]() as session:
        project = worker_ctx["settings"].settings_project_id
        assert await repository.get_mark(session, project, WATERMARK) is None
