"""Serve an ASGI app over real HTTP on loopback, inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from app.web.edge import PROTOCOL
from tests.support.tasks import pending_tasks

SHUTDOWN_SECONDS = 20.0
"""The app's lifespan bounds each of its shutdown steps (app/main.py); this bounds the whole."""


PORTS_START = 20000
"""Where the test processes' blocks of ports begin (`free_port`)."""
PORTS_PER_PROCESS = 1000


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (bind to port 0, client connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _block_start() -> int | None:
    """This test process's block of ports (`gw3`: the fourth), None when the blocks would reach
    the ephemeral range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = PORTS_START + (int(worker) if worker.isdigit() else 0) * PORTS_PER_PROCESS
    return start if start + PORTS_PER_PROCESS <= _ephemeral_start() else None


_BLOCK = _block_start()
# From a point of the block drawn per process: two test sessions at once (a run of some tests
# beside `make test`) have the same blocks, and would otherwise walk them in step.
_NEXT = itertools.count(random.randrange(PORTS_PER_PROCESS))


def free_port() -> int:
    """A loopback port free now, for a server a test starts by its number (a process given
    `--port`). The server binds it a moment later, and meanwhile the port must not be handed
    to anyone else: a port from the ephemeral range (bind to 0) could go to another test
    process's server, or to any client connection, in that moment, and a callback was then
    answered by another test's API. So the port comes from a block of this test process's own
    below the ephemeral range, each in turn; free when checked here."""
    if _BLOCK is not None:
        for _ in range(PORTS_PER_PROCESS):
            port = _BLOCK + next(_NEXT) % PORTS_PER_PROCESS
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue  # in use (a server of this process's earlier tests): the next
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


@contextlib.asynccontextmanager
async def serve(app: FastAPI, *, startup_timeout: float = 10.0) -> AsyncIterator[str]:
    """Run `app` (with its lifespan) on a free loopback port; yield its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The protocol the service is deployed with (app/web/edge.py): its deadlines apply here too.
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5, http=PROTOCOL
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(startup_timeout):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("server stopped while starting")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        # Bounded whatever the server does: a wait that cannot itself be held up by a task slow
        # to honour its cancellation, then uvicorn's own forced exit and a cancel, waited for a
        # bounded time too. Overrunning is a bug (a shutdown that would hang a process), so the
        # test fails, naming the tasks still running, instead of only taking longer.
        done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_SECONDS)
        stuck = "" if done else pending_tasks()
        if not done:
            server.force_exit = True
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        if task.done() and not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()
        sock.close()
        if stuck:
            raise AssertionError(
                f"the in-process server did not shut down in {SHUTDOWN_SECONDS} s:\n{stuck}"
            )
