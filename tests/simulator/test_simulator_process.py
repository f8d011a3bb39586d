"""`python -m devtools simulator` as `make run` starts it, in a real process: its secrets come from
the environment (never its command line, so any secret, even one starting with `-`, works), and
with `--state-file` its registrations outlive a restart."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from devtools.simulator import SimulatorControl, sign
from tests.simulator.sim_receiver import Receiver
from tests.support.servers import free_port

KEY_SECRET = "-key-secret-with-a-dash"
HMAC_SECRET = "--hmac-secret=looks-like-an-option"


@contextmanager
def simulator(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    env = {**os.environ, "SIMULATOR_KEY_SECRET": KEY_SECRET, "SIMULATOR_HMAC_SECRET": HMAC_SECRET}
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools", "simulator", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                if httpx.get(f"{base}/_sim/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


async def test_secrets_come_from_the_environment_even_starting_with_a_dash(
    receiver_server: Receiver,
) -> None:
    with simulator() as (base, process):
        basic = base64.b64encode(f"sim-key-id:{KEY_SECRET}".encode()).decode()
        async with httpx.AsyncClient(timeout=10) as http:
            token = await http.post(
                f"{base}/oauth2/token",
                data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {basic}"},
            )
        assert token.status_code == 200, token.text
        async with SimulatorControl(base) as control:
            created = await control.create_registration(callback_url=receiver_server.url)
            [event] = await control.events(created["id"])
            [result] = await control.deliver(event_ids=[event["eventId"]])
        assert result["status"] == 200, result
        [received] = [r for r in receiver_server.received if created["id"] in r.body.decode()]
        assert received.signature == sign(received.body, HMAC_SECRET)
        command_line = (
            await asyncio.to_thread(Path(f"/proc/{process.pid}/cmdline").read_bytes)
        ).decode()
        assert KEY_SECRET not in command_line and HMAC_SECRET not in command_line


async def test_registrations_outlive_a_restart_with_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "var" / "simulator.json"
    with simulator("--state-file", str(state)) as (base, _):
        async with SimulatorControl(base) as control:
            created = await control.create_registration()
            await control.transition(created["id"], "IN_PROGRESS")
    assert state.is_file()
    with simulator("--state-file", str(state)) as (base, _):
        async with SimulatorControl(base) as control:
            assert (await control.registration(created["id"]))["status"] == "IN_PROGRESS"
            events = await control.events(created["id"])
            assert [e["status"] for e in events] == ["IN_QUEUE", "IN_PROGRESS"]
            another = await control.create_registration()
            assert another["id"] != created["id"]
            assert (await control.events(another["id"]))[0]["eventId"] not in {
                e["eventId"] for e in events
            }
