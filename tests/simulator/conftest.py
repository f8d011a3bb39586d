"""Fixtures for the simulator tests: the simulator and a tiny callback receiver, both over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from devtools.simulator import SimulatorServer
from tests.simulator.sim_receiver import Receiver


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=11, hmac_secret="simulator-hmac-secret-ü") as server:
        yield server


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/callbacks", receiver.handle, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}/callbacks"
    yield receiver
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    """The session's receiver, emptied and answering 200."""
    receiver_server.received.clear()
    receiver_server.status = 200
    receiver_server.status_for.clear()
    return receiver_server


@pytest.fixture
async def api(sim_server: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client holding a valid bearer token, based at the project's API root."""
    async with httpx.AsyncClient(
        base_url=f"{sim_server.base_url}/v1/projects/{sim_server.project_id}"
    ) as client:
        answer = await client.post(
            sim_server.auth_url,
            data={"grant_type": "client_credentials"},
            auth=(sim_server.key_id, sim_server.key_secret),
        )
        assert answer.status_code == 200
        body = answer.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 3600
        client.headers["Authorization"] = f"Bearer {body['access_token']}"
        yield client
