"""Fixtures for worker tests: the simulator as Sinch, and the worker's own start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.core.settings import Settings
from app.main import create_app
from app.worker.context import WorkerContext
from devtools.simulator import SimulatorServer
from tests.conftest import make_settings
from tests.support.servers import serve
from tests.support.worker import worker_context


def sim_settings(
    sim_server: SimulatorServer, database_url: str, redis_url: str, **overrides: Any
) -> Settings:
    """Service settings pointing at the simulator, with its HMAC secret as the callback secret."""
    return make_settings(
        database_url,
        redis_url,
        sinch_api_base_url=sim_server.base_url,
        sinch_auth_url=sim_server.auth_url,
        sinch_project_id=sim_server.project_id,
        sinch_key_id=sim_server.key_id,
        sinch_key_secret=sim_server.key_secret,
        sinch_callback_secrets=[sim_server.hmac_secret],
        job_retry_base_seconds=0.05,
        job_max_tries=3,
        worker_metrics_port=0,
        **overrides,
    )


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    return sim_settings(sim_server, database_url, redis_url)


@pytest.fixture
async def api_url(settings: Settings) -> AsyncIterator[str]:
    async with serve(create_app(settings)) as base_url:
        yield base_url


@pytest.fixture
async def worker_ctx(settings: Settings) -> AsyncIterator[WorkerContext]:
    """The context the real worker builds at start-up (its own `on_startup`), for one test."""
    async with worker_context(settings) as ctx:
        yield ctx


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client
