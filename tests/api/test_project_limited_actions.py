"""A token limited to a project, made by the real command line (`python -m app token create
--project`), used on the API over loopback: another project's registration, event and delivery
are unknown to it (404, as a missing one, and nothing changes), while replaying and retrying its
own project's work. Project B is added by `python -m app project add` too, and its callbacks come
signed with its own secret through the real endpoint (issue 26)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.sequencer import number_and_publish
from app.core.settings import Settings
from app.main import create_app
from devtools.simulator import SimulatorServer
from tests.api.conftest import AUTH, api_settings, assert_problem, put_registration
from tests.callbacks.conftest import event_body
from tests.conftest import CALLBACK_SECRET
from tests.support.processes import run_cli
from tests.support.receivers import send_all
from tests.support.servers import free_port, serve
from tests.support.signing import sign
from tests.support.tokens import bearer

Sessions = async_sessionmaker[AsyncSession]
B = "proj-b"
CALLBACK_SECRET_B = "project-b-callback-secret-0123456789"
PICKUP_BOUND_SECONDS = 30.0
"""A bound on the API seeing project B (it re-reads the projects every `REFRESH_SECONDS`)."""


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    """Projects' keys can be sealed; subscriptions may send to loopback (a closed port here)."""
    return api_settings(
        sim_server,
        database_url,
        redis_url,
        project_secrets_key=SecretStr(Fernet.generate_key().decode()),
        subscription_allowed_hosts=["127.0.0.1"],
        subscription_allowed_networks=[ip_network("127.0.0.0/8")],
        delivery_timeout_seconds=2,
    )


def _environment(settings: Settings) -> dict[str, str]:
    """The command line's environment: the service's settings, and B's secrets to add it."""
    assert settings.project_secrets_key is not None and settings.sinch_key_secret is not None
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SINCH_PROJECT_ID": settings.settings_project_id,
        "SINCH_KEY_ID": settings.sinch_key_id or "",
        "SINCH_KEY_SECRET": settings.sinch_key_secret.get_secret_value(),
        "SINCH_CALLBACK_SECRETS": CALLBACK_SECRET,
        "PROJECT_SECRETS_KEY": settings.project_secrets_key.get_secret_value(),
        "PROJECT_KEY_SECRET": "project-b-key-secret-0123456789",
        "PROJECT_CALLBACK_SECRET": CALLBACK_SECRET_B,
    }


@dataclass
class Deployment:
    base_url: str
    env: dict[str, str]
    a: str
    """The settings' project."""


@pytest.fixture
async def deployment(settings: Settings, tmp_path: Path) -> AsyncIterator[Deployment]:
    """The API serving the settings' project A and project B (added by the command line)."""
    env = _environment(settings)
    async with serve(create_app(settings)) as base_url:
        added = await asyncio.to_thread(
            run_cli, env, "project", "add", B, "--key-id", "key-b", cwd=tmp_path
        )
        assert added.returncode == 0, added.stderr
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            async with asyncio.timeout(PICKUP_BOUND_SECONDS):
                # Unsigned: 401 once the API knows B (nothing kept), 404 before.
                while (await client.post(f"/callbacks/sinch/{B}/registrations")).status_code != 401:
                    await asyncio.sleep(0.1)
        yield Deployment(base_url, env, settings.settings_project_id)


async def _token_for(deployment: Deployment, tmp_path: Path, name: str, *projects: str) -> str:
    """A write token made by `python -m app token create`, limited to `projects`."""
    limits = [option for project in projects for option in ("--project", project)]
    created = await asyncio.to_thread(
        run_cli,
        deployment.env,
        "token",
        "create",
        name,
        "--scope",
        "write",
        *limits,
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    assert f"projects {', '.join(sorted(projects))}" in created.stderr
    return created.stdout.strip()


async def test_a_token_made_by_the_command_line_for_a_project_does_not_see_another(
    deployment: Deployment, sessionmaker: Sessions, tmp_path: Path
) -> None:
    await put_registration(sessionmaker, "reg-a", project_id=deployment.a)
    await put_registration(sessionmaker, "reg-b", project_id=B)
    token = await _token_for(deployment, tmp_path, "only-a", deployment.a)
    async with httpx.AsyncClient(
        base_url=deployment.base_url, headers=bearer(token), timeout=30
    ) as only_a:
        assert (await only_a.get("/v1/registrations/reg-a")).status_code == 200
        hidden = await only_a.get("/v1/registrations/reg-b")
        missing = await only_a.get("/v1/registrations/reg-none")
        assert_problem(hidden, 404)
        assert hidden.json() == missing.json()
        listed = (await only_a.get("/v1/registrations")).json()["items"]
        assert [r["id"] for r in listed] == ["reg-a"]
    # A project that does not exist is refused, and no token is printed.
    refused = await asyncio.to_thread(
        run_cli,
        deployment.env,
        "token",
        "create",
        "nowhere",
        "--scope",
        "read",
        "--project",
        "nope",
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and "no project is called nope" in refused.stderr
    assert refused.stdout == ""


async def _events(client: httpx.AsyncClient) -> dict[str, dict[str, object]]:
    """Every kept event by its project (one each here)."""
    items = (await client.get("/v1/events")).json()["items"]
    return {item["projectId"]: item for item in items}


async def test_a_limited_token_replays_and_retries_only_its_projects_work(
    deployment: Deployment, sessionmaker: Sessions, settings: Settings, tmp_path: Path
) -> None:
    token = await _token_for(deployment, tmp_path, "writer-a", deployment.a)
    async with (
        httpx.AsyncClient(base_url=deployment.base_url, headers=AUTH, timeout=30) as v1,
        httpx.AsyncClient(
            base_url=deployment.base_url, headers=bearer(token), timeout=30
        ) as only_a,
    ):
        # One callback event of each project, through the real endpoint with its own secret.
        for path, secret in (
            ("/callbacks/sinch/registrations", CALLBACK_SECRET),
            (f"/callbacks/sinch/{B}/registrations", CALLBACK_SECRET_B),
        ):
            body = event_body()
            answer = await v1.post(
                path, content=body, headers={"X-Sinch-Signature": sign(body, secret)}
            )
            assert answer.status_code == 200, answer.text
        events = await _events(v1)
        a_event, b_event = events[deployment.a], events[B]

        hidden = await only_a.post(f"/v1/events/{b_event['id']}/replay")
        missing = await only_a.post("/v1/events/999999/replay")
        assert_problem(hidden, 404)
        assert hidden.json() == missing.json()
        replayed = await only_a.post(f"/v1/events/{a_event['id']}/replay")
        assert replayed.status_code == 202, replayed.text
        assert replayed.json()["projectId"] == deployment.a

        # A subscription of every project, with one delivery of each project's change; its
        # receiver is a closed port, so a first attempt fails and is scheduled later.
        made = await v1.post(
            "/v1/subscriptions", json={"url": f"http://127.0.0.1:{free_port()}/hook"}
        )
        assert made.status_code == 201, made.text
        subscription = made.json()["id"]
        await put_registration(sessionmaker, "reg-a", project_id=deployment.a)
        await put_registration(sessionmaker, "reg-b", project_id=B)
        await number_and_publish(sessionmaker, None)
        await send_all(settings, sessionmaker, subscription)
        deliveries_path = f"/v1/subscriptions/{subscription}/deliveries"
        failed = {d["projectId"]: d for d in (await v1.get(deliveries_path)).json()["items"]}
        a_delivery, b_delivery = failed[deployment.a], failed[B]
        assert a_delivery["attempts"] == b_delivery["attempts"] == 1
        assert a_delivery["nextAttemptAt"] is not None

        hidden = await only_a.post(f"/v1/deliveries/{b_delivery['id']}/retry")
        missing = await only_a.post("/v1/deliveries/999999/retry")
        assert_problem(hidden, 404)
        assert hidden.json() == missing.json()
        # The subscription of every project is not within A's limit either.
        everyone = await only_a.post(
            f"/v1/subscriptions/{subscription}/retry-failed",
            json={"since": "2026-01-01T00:00:00Z"},
        )
        assert_problem(everyone, 404)
        retried = await only_a.post(f"/v1/deliveries/{a_delivery['id']}/retry")
        assert retried.status_code == 202, retried.text

        after = {d["projectId"]: d for d in (await v1.get(deliveries_path)).json()["items"]}
        # A's is due now (sooner than its backoff said); B's is as it was.
        assert after[deployment.a]["state"] == "pending"
        assert after[deployment.a]["nextAttemptAt"] < a_delivery["nextAttemptAt"]
        assert after[B] == b_delivery
        # Nothing of B's was touched: its event is as the callback left it, and the audit trail
        # holds A's replay and retry only.
        assert (await _events(v1))[B] == b_event
        audit = (await v1.get("/v1/audit")).json()["items"]
        acted = {
            (e["action"], e["target"], e["projectId"])
            for e in audit
            if e["action"] in {"event.replay", "delivery.retry"}
        }
        assert acted == {
            ("event.replay", str(a_event["id"]), deployment.a),
            ("delivery.retry", str(a_delivery["id"]), deployment.a),
        }
