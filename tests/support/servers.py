"""Serve an ASGI app over real HTTP on loopback, inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from app.web.edge import PROTOCOL
from tests.support.tasks import pending_tasks

SHUTDOWN_SECONDS = 20.0
"""The app's lifespan bounds each of its shutdown steps (app/main.py); this bounds the whole."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
