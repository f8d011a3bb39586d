"""A client that drops the change stream (`/v1/changes/stream`) mid-event costs one info line,
not ERROR tracebacks (issue 24, 6): behind real uvicorn with the service's own protocol, logging
JSON, with changes still buffered for the client when it leaves (closed with FIN and with RST).

FastAPI's generator endpoints (`EventSourceResponse`) logged two ERROR tracebacks of about 5 KB
each (an ExceptionGroup of anyio.BrokenResourceError, from app.core.problems and uvicorn.error)
in exactly this case."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.simulator import SimulatorControl
from tests.support.stack import API_TOKEN, CALLBACK_PATH, Stack, drain_all, running_stack

pytestmark = pytest.mark.slow

REGISTRATIONS = 40  # about 120 changes: far more than the first read takes
WAIT_SECONDS = 20


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, "stream_drop", LOG_FORMAT="json") as started:
        started.start_api_and_worker()
        yield started


async def _changes(stack: Stack) -> None:
    async with SimulatorControl(stack.sim.base_url) as sim:
        for _ in range(REGISTRATIONS):
            await sim.create_registration(
                callback_url=stack.api_url + CALLBACK_PATH, lifecycle=["IN_PROGRESS", "APPROVED"]
            )
        await sim.deliver()
    await drain_all(stack)


def _drop_mid_event(api_url: str, *, reset: bool) -> bytes:
    """Open the stream from the oldest change, read a part of it, and leave."""
    host, port = api_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=WAIT_SECONDS) as client:
        client.sendall(
            b"GET /v1/changes/stream?cursor=0 HTTP/1.1\r\nHost: api\r\n"
            + f"Authorization: Bearer {API_TOKEN}\r\n\r\n".encode()
        )
        got = b""
        while len(got) < 3000:
            chunk = client.recv(3000 - len(got))
            assert chunk, "the stream ended before the client left"
            got += chunk
        if reset:  # an RST instead of a FIN
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return got


def _api_records(stack: Stack) -> list[dict[str, object]]:
    records = []
    for line in stack.logs().splitlines():
        start = line.find("{")
        if start >= 0:
            try:
                records.append(json.loads(line[start:]))
            except ValueError:
                continue
    return records


def test_a_client_dropping_the_stream_is_one_info_line(stack: Stack) -> None:
    asyncio.run(_changes(stack))
    for reset in (False, True, False, True):
        head = _drop_mid_event(stack.api_url, reset=reset)
        assert head.startswith(b"HTTP/1.1 200") and b"event: change" in head

    def ended() -> list[dict[str, object]]:
        return [
            r
            for r in _api_records(stack)
            if r.get("message") == "change stream ended: the client left"
        ]

    deadline = time.monotonic() + WAIT_SECONDS
    while len(ended()) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = ended()
    assert len(lines) == 4, lines
    assert all(r["level"] == "info" and isinstance(r["after"], int) for r in lines)
    time.sleep(1)  # what a dropped stream logs after its line, it logs now
    errors = [r for r in _api_records(stack) if r.get("level") in {"error", "critical"}]
    assert errors == [], [str(r.get("message"))[:200] for r in errors]
    assert "Traceback" not in stack.logs()
