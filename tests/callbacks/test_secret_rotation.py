"""`python -m app secret rotate` against the simulator as Sinch and two real API processes.

A rotation gives Sinch the new secret only once every running API process has answered a probe
signed with it; the probe is never kept as an event. When one process does not accept it (here:
one reading another database, so it never learns the pending secret), the rotation is refused and
Sinch keeps signing with the old secret.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.core.db import create_engine
from app.core.models import AuditEntry, CallbackEvent, CallbackSecret
from app.core.settings import Settings
from app.sinch.client import SinchClient, create_http_client
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.conftest import make_settings
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.processes import ServiceProcess, start_api
from tests.support.reads import rows

HMAC_SECRET = "rotation-test-old-hmac-secret-never-logged"
KEY_SECRET = "rotation-test-key-secret-never-logged"
API_TOKEN = "rotation-test-api-token-never-logged"


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(key_secret=KEY_SECRET, hmac_secret=HMAC_SECRET) as server:
        yield server


@pytest.fixture
def env(simulator: SimulatorServer, database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **simulator.env(),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "INTERNAL_API_TOKENS": API_TOKEN,
        "RECONCILE_INTERVAL_SECONDS": "0",
    }


@pytest.fixture
def service_settings(env: dict[str, str], simulator: SimulatorServer) -> Settings:
    return make_settings(
        env["DATABASE_URL"],
        env["REDIS_URL"],
        sinch_callback_secrets=[HMAC_SECRET],
        sinch_api_base_url=simulator.base_url,
        sinch_auth_url=simulator.auth_url,
        sinch_project_id=simulator.project_id,
        sinch_key_id=simulator.key_id,
        sinch_key_secret=KEY_SECRET,
    )


def cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def secret_at_sinch(settings: Settings) -> str:
    async with create_http_client(settings) as http:
        configuration = await SinchClient.from_settings(settings, http).get_callback_configuration()
    return configuration.hmac_secret.get_secret_value()


async def audit_actions(settings: Settings) -> list[str]:
    return [entry.action for entry in await rows(settings, AuditEntry, AuditEntry.id)]


def stop_all(processes: list[ServiceProcess]) -> None:
    for process in processes:
        process.stop()


async def test_a_rotation_reaches_every_process_before_sinch(
    env: dict[str, str], service_settings: Settings, simulator: SimulatorServer, tmp_path: Path
) -> None:
    first, first_url = await asyncio.to_thread(start_api, env, tmp_path / "api-1.log")
    second, second_url = await asyncio.to_thread(start_api, env, tmp_path / "api-2.log")
    try:
        rotated = await asyncio.to_thread(
            cli,
            env,
            "secret",
            "rotate",
            "--api-url",
            first_url,
            "--api-url",
            second_url,
            "--timeout",
            "20",
            cwd=tmp_path,
        )
        assert rotated.returncode == 0, rotated.stderr
        assert "every running API process accepts the new secret" in rotated.stdout
        assert "Sinch now signs callbacks with the new secret" in rotated.stdout

        new_secret = await secret_at_sinch(service_settings)
        assert new_secret != HMAC_SECRET
        assert new_secret not in rotated.stdout + rotated.stderr
        # The probes were answered, not kept.
        assert await rows(service_settings, CallbackEvent, CallbackEvent.id) == []
        [row] = await rows(service_settings, CallbackSecret, CallbackSecret.id)
        assert (row.state, row.secret) == ("current", new_secret)
        assert await audit_actions(service_settings) == ["callback_secret.rotate"]

        # Sinch's next callback is signed with the new secret: both processes keep it.
        async with SimulatorControl(simulator.base_url) as sim:
            for url in (first_url, second_url):
                await sim.create_registration(
                    callback_url=f"{url}/callbacks/sinch/registrations", lifecycle=["IN_PROGRESS"]
                )
            delivered = await sim.deliver()
        assert len(delivered) >= 2
        assert {result["status"] for result in delivered} == {200}, delivered

        status = await asyncio.to_thread(cli, env, "secret", "status", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert f"{len(delivered)} with the secret Sinch signs with now" in status.stdout
        assert new_secret not in status.stdout + status.stderr
    finally:
        stop_all([first, second])
    logs = (tmp_path / "api-1.log").read_text() + (tmp_path / "api-2.log").read_text()
    assert new_secret not in logs and HMAC_SECRET not in logs


async def test_a_rotation_is_refused_when_a_process_does_not_accept_the_new_secret(
    env: dict[str, str], service_settings: Settings, tmp_path: Path, worker_id: str
) -> None:
    # A process of its own database never learns the pending secret: it answers the probe 401.
    stray_name = f"sinch_stray_{worker_id}_{os.getpid()}"
    stray_database = await asyncio.to_thread(create_postgres_database, stray_name)
    first, first_url = await asyncio.to_thread(start_api, env, tmp_path / "api-1.log")
    stray, stray_url = await asyncio.to_thread(
        start_api, {**env, "DATABASE_URL": stray_database}, tmp_path / "api-stray.log"
    )
    try:
        refused = await asyncio.to_thread(
            cli,
            env,
            "secret",
            "rotate",
            "--api-url",
            first_url,
            "--api-url",
            stray_url,
            "--timeout",
            "3",
            cwd=tmp_path,
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "rotation refused, Sinch not changed" in refused.stderr
        assert "1 of 2 running API processes did not accept" in refused.stderr
        assert "401" in refused.stderr

        assert await secret_at_sinch(service_settings) == HMAC_SECRET
        assert await rows(service_settings, CallbackSecret, CallbackSecret.id) == []  # withdrawn
        assert await audit_actions(service_settings) == ["callback_secret.rotate_refused"]
        assert await rows(service_settings, CallbackEvent, CallbackEvent.id) == []

        # The old secret still works everywhere.
        async with httpx.AsyncClient(timeout=10) as client:
            from tests.support.signing import sign

            body = b'{"eventId":"after-refusal","resourceId":"r-1","status":"IN_PROGRESS"}'
            for url in (first_url, stray_url):
                answer = await client.post(
                    f"{url}/callbacks/sinch/registrations",
                    content=body,
                    headers={"X-Sinch-Signature": sign(body, HMAC_SECRET)},
                )
                assert answer.status_code == 200
    finally:
        stop_all([first, stray])
        await asyncio.to_thread(drop_postgres_database, stray_name)


async def test_a_rotation_without_any_running_process_is_refused(
    env: dict[str, str], service_settings: Settings, tmp_path: Path
) -> None:
    refused = await asyncio.to_thread(
        cli,
        env,
        "secret",
        "rotate",
        "--api-url",
        "http://127.0.0.1:9",
        "--timeout",
        "1",
        cwd=tmp_path,
    )
    assert refused.returncode == 1
    assert "no running API process announced itself" in refused.stderr
    assert await secret_at_sinch(service_settings) == HMAC_SECRET
    engine = create_engine(service_settings)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(select(CallbackSecret.id))).all() == []
    finally:
        await engine.dispose()
