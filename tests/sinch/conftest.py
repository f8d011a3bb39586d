"""Fixtures for the Sinch client tests: one simulator over real HTTP on loopback, reset per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from app.sinch.client import SinchClient
from devtools.simulator import SimulatorServer
from tests.sinch.sinch_support import ClientFactory, client_for


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=4, key_secret="key-secret-never-shown-4711") as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0, connect=2.0)) as client:
        yield client


@pytest.fixture
def make_client(sim_server: SimulatorServer, http: httpx.AsyncClient) -> ClientFactory:
    def make(**overrides: Any) -> SinchClient:
        return client_for(sim_server, http, **overrides)

    return make
