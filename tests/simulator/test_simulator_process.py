"""`python -m devtools simulator` as `make run` starts it, in a real process: its secrets come from
the environment (never its command line, so any secret, even one starting with `-`, works), and
with `--state-file` its registrations outlive a restart. With `--other-project` it serves more
projects, each with its own keys, HMAC secret (from the environment too) and state."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from devtools.simulator import SimulatorControl, sign
from tests.simulator.sim_receiver import Receiver
from tests.support.servers import free_port

KEY_SECRET = "-key-secret-with-a-dash"
HMAC_SECRET = "--hmac-secret=looks-like-an-option"


@contextmanager
def simulator(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    env = {
        **os.environ,
        "SIMULATOR_KEY_SECRET": KEY_SECRET,
        "SIMULATOR_HMAC_SECRET": HMAC_SECRET,
        **(env or {}),
    }
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


async def command_line_of(process: subprocess.Popen[str]) -> str:
    return (await asyncio.to_thread(Path(f"/proc/{process.pid}/cmdline").read_bytes)).decode()


def assert_signed(receiver: Receiver, registration_id: str, hmac_secret: str) -> None:
    """The receiver got the registration's callback, signed with `hmac_secret`."""
    [received] = [r for r in receiver.received if registration_id in r.body.decode()]
    assert received.signature == sign(received.body, hmac_secret)


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
        assert_signed(receiver_server, created["id"], HMAC_SECRET)
        command_line = await command_line_of(process)
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


B = "brand-b.2"
B_KEY_SECRET = "-b-key-secret-never-shown"
B_HMAC_SECRET = "--b-hmac-secret=never-shown"
B_ENV = {
    "SIMULATOR_KEY_SECRET_BRAND_B_2": B_KEY_SECRET,
    "SIMULATOR_HMAC_SECRET_BRAND_B_2": B_HMAC_SECRET,
}


async def token(http: httpx.AsyncClient, key_id: str, key_secret: str) -> httpx.Response:
    basic = base64.b64encode(f"{key_id}:{key_secret}".encode()).decode()
    return await http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )


async def test_other_projects_are_served_with_their_own_keys_secrets_and_state(
    receiver_server: Receiver, tmp_path: Path
) -> None:
    state = tmp_path / "var" / "simulator.json"
    args = ("--other-project", f"{B}:key-b", "--state-file", str(state))
    with simulator(*args, env=B_ENV) as (base, process):
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert (await token(http, "key-b", KEY_SECRET)).status_code == 401
            answer = await token(http, "key-b", B_KEY_SECRET)
            assert answer.status_code == 200, answer.text
            bearer = {"Authorization": f"Bearer {answer.json()['access_token']}"}
            async with SimulatorControl(f"{base}/_sim/projects/{B}") as control_b:
                made = await control_b.create_registration(callback_url=receiver_server.url)
                [event] = await control_b.events(made["id"])
                [sent] = await control_b.deliver(event_ids=[event["eventId"]])
            path = f"/v1/projects/{B}/registrations/{made['id']}"
            assert (await http.get(path, headers=bearer)).status_code == 200
            # B's token is B's only: the first project refuses it.
            other = f"/v1/projects/sim-project/registrations/{made['id']}"
            assert (await http.get(other, headers=bearer)).status_code == 401
        async with SimulatorControl(base) as control_a:
            assert await control_a.all_events() == []  # B's registration is B's alone
        assert sent["status"] == 200, sent
        assert_signed(receiver_server, made["id"], B_HMAC_SECRET)
        command_line = await command_line_of(process)
    printed = (await asyncio.to_thread(process.communicate))[0]
    for secret in (B_KEY_SECRET, B_HMAC_SECRET, KEY_SECRET, HMAC_SECRET):
        assert secret not in command_line and secret not in printed
    assert f"project add {B} --key-id key-b" in printed
    assert "<as given by SIMULATOR_HMAC_SECRET_BRAND_B_2>" in printed
    # Each project's state in its own file, back after a restart in its own project.
    kept = json.loads(await asyncio.to_thread((state.parent / f"simulator.{B}.json").read_text))
    assert made["id"] in json.dumps(kept)
    with simulator(*args, env=B_ENV) as (base, _):
        async with SimulatorControl(f"{base}/_sim/projects/{B}") as control_b:
            assert (await control_b.registration(made["id"]))["id"] == made["id"]
        async with SimulatorControl(base) as control_a:
            assert await control_a.all_events() == []


@pytest.mark.parametrize(
    ("option", "said"),
    [
        ("brand-b", "is not PROJECT_ID:KEY_ID"),
        ("sim-project:key-x", "the project sim-project is served already"),
        ("brand-b:sim-key-id", "the key id sim-key-id is served already"),
    ],
)
def test_an_other_project_that_cannot_be_served_is_refused(option: str, said: str) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "devtools", "simulator", "--port", "0", "--other-project", option],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and said in refused.stderr, refused
