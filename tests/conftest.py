"""Fixtures: real PostgreSQL, real Redis, the API over real HTTP on loopback.

Database tests take the `database_url` fixture. Under pytest-xdist each test process gets its own
PostgreSQL database and its own Redis database index.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis
from _pytest.nodeid import coerce_node_id
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from app.main import create_app
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    drop_template,
    truncate_postgres,
)
from tests.support.servers import serve

REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
CALLBACK_SECRET = "current-callback-secret-0123456789"
OLD_CALLBACK_SECRET = "previous-callback-secret-9876543210"
API_TOKEN = "internal-token-abcdefghijklmnop"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked `slow` (they start processes) first, each kind in its own order.

    `make test` runs three test processes (`--dist loadgroup`), each taking the next test when it
    is done with one. A slow test taken near the end runs on alone while the others wait for it;
    taken first, the slow tests share the processes and the quick ones fill in around them.
    (`trylast`: after every conftest has marked its tests, and after pytest-xdist's hook.)"""
    _keep_groups_together(config, items)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _keep_groups_together(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make `--dist loadgroup` send an `xdist_group`'s tests to one test process again.

    pytest-xdist (3.8) groups the tests by a suffix `@group` it adds to their node ids, writing
    `item._nodeid`; pytest 9 keeps a node's id in `item._id`, so the suffix no longer took and
    each group was spread over the processes: the query-plans module filled its 100,000 rows,
    and each end-to-end module started its stack, once per process. Where xdist's suffix is
    missing, it is added here the way xdist means it (its scheduler reads the part after `@`)."""
    if not getattr(config.option, "loadgroup", False):
        return  # not a test process of `--dist loadgroup`
    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix):
            item._id = coerce_node_id(item.nodeid + suffix)


def _worker_number(worker_id: str) -> int:
    return 0 if worker_id == "master" else int(worker_id.removeprefix("gw"))


@pytest.fixture(scope="session", autouse=True)
def _migrated_template() -> Iterator[None]:
    """Drops this test process's migrated template database (tests.support.databases) at the
    end, whichever tests made it."""
    yield
    drop_template()


@pytest.fixture(scope="session")
def postgres_session_url(worker_id: str) -> Iterator[str]:
    name = f"sinch_test_{worker_id}_{os.getpid()}"  # unique even beside another test run
    url = create_postgres_database(name)
    yield url
    drop_postgres_database(name)


@pytest.fixture
def database_url(postgres_session_url: str) -> str:
    """This test process's migrated database, emptied for this test."""
    asyncio.run(truncate_postgres(postgres_session_url))
    return postgres_session_url


@pytest.fixture
def redis_url(worker_id: str) -> str:
    """A Redis database index of this test process's own, flushed before the test."""
    url = f"{REDIS_BASE_URL}/{1 + _worker_number(worker_id) % 15}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def make_settings(database_url: str, redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "sinch_callback_secrets": [CALLBACK_SECRET, OLD_CALLBACK_SECRET],
        "internal_api_tokens": [API_TOKEN],
        "log_format": "text",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url)


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the test's database (its `settings`), the engine disposed after the test."""
    engine = create_engine(settings)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the API served from `settings` on a loopback port."""
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimulatorServer]:
    """The simulator as Sinch, over HTTP on loopback, for the whole run (directories may override
    it with other credentials)."""
    with SimulatorServer(seed=11, key_secret="sim-key-secret-never-logged") as server:
        yield server


@pytest.fixture
async def sim(sim_server: SimulatorServer) -> AsyncIterator[SimulatorControl]:
    """Control of the simulator, reset before and after the test (a test that changes the HMAC
    secret must not sign the next test's callbacks with it)."""
    async with SimulatorControl(sim_server.base_url) as control:
        await control.reset()
        yield control
        await control.reset()
