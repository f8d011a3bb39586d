"""A newcomer can use the simulator without reading its code: its control routes are documented,
its docs page works offline, and `python -m devtools simulator` says how to point the service
at it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devtools.simulator import SimulatorServer
from tests.support.servers import free_port


async def test_every_control_route_is_documented(sim_server: SimulatorServer) -> None:
    async with httpx.AsyncClient(base_url=sim_server.base_url, timeout=10) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
        control = {p: ops for p, ops in paths.items() if p.startswith("/_sim")}
        assert len(control) >= 10
        for path, operations in control.items():
            for method, operation in operations.items():
                assert operation.get("summary"), f"{method} {path} has no summary"
                assert operation.get("description"), f"{method} {path} has no description"
        page = await client.get("/docs")
        assert page.status_code == 200
        assert "cdn." not in page.text and "/docs-assets/swagger-ui-bundle.js" in page.text
        assert (await client.get("/docs-assets/swagger-ui-bundle.js")).status_code == 200


ROOT = Path(__file__).resolve().parents[2]


def banner(folder: Path, *options: str, **env: str) -> str:
    """What `python -m devtools simulator` prints before it serves; the process is stopped after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools", "simulator", *options],
        cwd=folder,
        # devtools is not installed (the image leaves it out): found from the checkout.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any(line.startswith("  SINCH_CALLBACK_SECRETS=") for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        return "".join(lines)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_the_command_prints_how_to_point_the_service_at_it(tmp_path: Path) -> None:
    port = free_port()
    printed = banner(tmp_path, "--port", str(port))
    assert f"SINCH_API_BASE_URL=http://127.0.0.1:{port}" in printed
    assert f"SINCH_AUTH_URL=http://127.0.0.1:{port}/oauth2/token" in printed
    # The published defaults are shown: they are the simulator's own fake credentials.
    assert "SINCH_KEY_SECRET=sim-key-secret" in printed


def test_a_secret_passed_in_is_not_printed(tmp_path: Path) -> None:
    printed = banner(
        tmp_path,
        "--port",
        str(free_port()),
        SIMULATOR_HMAC_SECRET="passed-in-secret-never-printed",
    )
    assert "passed-in-secret-never-printed" not in printed
    assert "<as given by SIMULATOR_HMAC_SECRET>" in printed
