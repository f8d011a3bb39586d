"""The command line against real services: the simulator as Sinch, a real database and Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.jobs import event_job_id
from app.core.models import AuditEntry, TimeInState
from app.core.settings import Settings
from app.main import create_app
from app.worker.context import WorkerContext
from app.worker.tasks import process_event
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.forecasts.test_refresh import gb_history
from tests.support import processes
from tests.support.reads import events, registrations, rows
from tests.support.servers import serve
from tests.support.signing import sign


def cli_env(settings: Settings) -> dict[str, str]:
    secrets = ",".join(s.get_secret_value() for s in settings.sinch_callback_secrets)
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SINCH_CALLBACK_SECRETS": secrets,
        "SINCH_API_BASE_URL": settings.sinch_api_base_url,
        "SINCH_AUTH_URL": settings.sinch_auth_url,
        "SINCH_PROJECT_ID": settings.sinch_project_id or "",
        "SINCH_KEY_ID": settings.sinch_key_id or "",
        "SINCH_KEY_SECRET": settings.sinch_key_secret.get_secret_value()
        if settings.sinch_key_secret
        else "",
    }
    return env


async def run_cli(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m app ...` off the event loop, which serves the API the command may call."""
    return await asyncio.to_thread(processes.run_cli, cli_env(settings), *args, cwd=cwd)


@pytest.fixture
async def api_url(settings: Settings) -> AsyncIterator[str]:
    async with serve(create_app(settings)) as base_url:
        yield base_url


@pytest.mark.parametrize(
    ("module", "commands"),
    [
        (
            "app",
            (
                "serve",
                "worker",
                "delivery-worker",
                "migrate",
                "reconcile",
                "replay",
                "prune",
                "sign",
                "secret",
                "token",
                "deliveries",
                "catalog",
                "registration",
            ),
        ),
        ("devtools", ("simulator", "sandbox", "demo")),
    ],
)
def test_help_lists_every_command(tmp_path: Path, module: str, commands: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")}
    assert set(commands) <= listed


async def test_sign_prints_a_curl_the_service_accepts(
    settings: Settings, api_url: str, tmp_path: Path
) -> None:
    printed = await run_cli(
        settings, "sign", "--url", api_url, "--status", "APPROVED", cwd=tmp_path
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("curl ")
    posted = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", printed.stdout],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "HTTP/1.1 200" in posted.stdout, posted.stdout
    [event] = await events(settings)
    assert b'"status":"APPROVED"' in event.body


async def test_reconcile_full_imports_what_sinch_has(
    settings: Settings, sim: SimulatorControl, tmp_path: Path
) -> None:
    created = [
        await sim.create_registration(lifecycle=["IN_PROGRESS"]),
        await sim.create_registration(registration_type="SHORT_CODE"),
        await sim.create_registration(lifecycle=["IN_PROGRESS", "REJECTED"]),
    ]
    result = await run_cli(settings, "reconcile", "--full", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 registrations seen" in result.stdout
    local = {r.id: r.status for r in await registrations(settings)}
    assert local == {doc["id"]: (await sim.registration(doc["id"]))["status"] for doc in created}


async def test_replay_puts_an_event_back_and_enqueues_it(
    settings: Settings,
    sim: SimulatorControl,
    api_url: str,
    worker_ctx: WorkerContext,
    tmp_path: Path,
) -> None:
    doc = await sim.create_registration()
    await sim.deliver(api_url + "/callbacks/sinch/registrations")
    [event] = await events(settings)
    assert await process_event(worker_ctx, event.id) == "checked:unknown_registration"

    result = await run_cli(settings, "replay", str(event.id), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [event] = await events(settings)
    assert event.state == "received"
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        queued = {m.decode() for m in await client.zrange("arq:queue", 0, -1)}
    finally:
        await client.aclose()
    assert event_job_id(event.id) in queued
    assert await process_event(worker_ctx, event.id) == "ignored:duplicate"
    assert [r.id for r in await registrations(settings)] == [doc["id"]]

    missing = await run_cli(settings, "replay", "999999", cwd=tmp_path)
    assert missing.returncode == 1
    assert "999999" in missing.stderr

    # Audited, one entry per event put back, in its transaction; the unknown id left none.
    bulk = await run_cli(settings, "replay", str(event.id), str(event.id), cwd=tmp_path)
    assert bulk.returncode == 0, bulk.stderr
    audited = await rows(settings, AuditEntry, AuditEntry.id)
    assert [(e.action, e.target, e.detail) for e in audited] == [
        ("event.replay", str(event.id), None),
        ("event.replay", str(event.id), {"bulk": 2}),
        ("event.replay", str(event.id), {"bulk": 2}),
    ]
    assert all(e.actor.startswith("cli:") for e in audited)


async def test_prune_deletes_old_processed_events_and_keeps_the_rest(
    settings: Settings,
    sim: SimulatorControl,
    api_url: str,
    worker_ctx: WorkerContext,
    tmp_path: Path,
    http: httpx.AsyncClient,
) -> None:
    await sim.create_registration()
    await sim.deliver(api_url + "/callbacks/sinch/registrations")
    body = b"not json"
    secret = settings.sinch_callback_secrets[0].get_secret_value()
    await http.post(
        api_url + "/callbacks/sinch/registrations",
        content=body,
        headers={"X-Sinch-Signature": sign(body, secret)},
    )
    for event in await events(settings):
        await process_event(worker_ctx, event.id)
    assert sorted(e.state for e in await events(settings)) == ["invalid", "processed"]

    kept = await run_cli(settings, "prune", cwd=tmp_path)  # default retention: nothing is that old
    assert kept.returncode == 0
    assert len(await events(settings)) == 2

    pruned = await run_cli(settings, "prune", "--days", "0", cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    assert [e.state for e in await events(settings)] == ["invalid"]


async def test_secret_show_and_set(
    settings: Settings, sim_server: SimulatorServer, sim: SimulatorControl, tmp_path: Path
) -> None:
    # `sim` resets the simulator before (its first secret back) and so after this test too.
    shown = await run_cli(settings, "secret", "show", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == sim_server.hmac_secret

    unconfirmed = await run_cli(
        settings, "secret", "set", "brand-new-secret-0123456789", cwd=tmp_path
    )
    assert unconfirmed.returncode == 1
    assert "SINCH_CALLBACK_SECRETS" in unconfirmed.stderr
    assert (
        await run_cli(settings, "secret", "show", cwd=tmp_path)
    ).stdout.strip() == sim_server.hmac_secret

    generated = await run_cli(settings, "secret", "set", "--yes", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    new_secret = generated.stdout.strip()
    assert len(new_secret) >= 32
    assert (await run_cli(settings, "secret", "show", cwd=tmp_path)).stdout.strip() == new_secret


async def test_changes_prints_the_feed_one_line_per_change_and_follows_it(
    settings: Settings, sim: SimulatorControl, tmp_path: Path
) -> None:
    gb = await sim.create_registration(
        policy_id="sim-policy-gb-alphanumeric", sender_ids=["ACME"], lifecycle=["IN_PROGRESS"]
    )
    await sim.create_registration(lifecycle=["IN_PROGRESS", "REJECTED"])
    # The reconcile command records a change per registration learnt, and numbers them.
    assert (await run_cli(settings, "reconcile", cwd=tmp_path)).returncode == 0

    printed = await run_cli(settings, "changes", "--all", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[0] == "1"
    [line] = [line for line in lines if gb["id"] in line]
    assert "(new) -> IN_PROGRESS" in line and "sender ACME" in line and "status/reconcile" in line

    # --follow keeps printing what comes, here from another process (the reconcile command).
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "changes",
        "--follow",
        "--last",
        "0",
        env=cli_env(settings),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(1.5)  # started and waiting
        await sim.transition(gb["id"], "APPROVED")
        assert (await run_cli(settings, "reconcile", "--full", cwd=tmp_path)).returncode == 0
        assert follower.stdout is not None
        line = (await asyncio.wait_for(follower.stdout.readline(), 30)).decode()
        assert line.split()[0] == "3" and "IN_PROGRESS -> APPROVED" in line
    finally:
        follower.terminate()
        await asyncio.wait_for(follower.wait(), 10)


async def test_deliveries_are_listed_and_retried_from_the_command_line(
    settings: Settings, sim: SimulatorControl, tmp_path: Path
) -> None:
    from app.core.db import create_engine, create_sessionmaker, utcnow
    from app.subscriptions import service as subscriptions
    from app.subscriptions.schemas import SubscriptionIn

    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine).begin() as session:
            subscription = await subscriptions.create(
                session,
                SubscriptionIn(url="http://127.0.0.1:9/hooks"),
                allowed_hosts=["127.0.0.1"],
                now=utcnow(),
            )
    finally:
        await engine.dispose()
    await sim.create_registration(lifecycle=["IN_PROGRESS"])
    assert (await run_cli(settings, "reconcile", cwd=tmp_path)).returncode == 0

    listed = await run_cli(settings, "deliveries", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    delivery_id = line.split()[0]
    assert subscription.id in line and "pending" in line and "seq      1" in line

    retried = await run_cli(settings, "deliveries", "retry", delivery_id, cwd=tmp_path)
    assert retried.returncode == 0 and "1 deliveries" in retried.stdout
    unknown = await run_cli(settings, "deliveries", "retry", "999999", cwd=tmp_path)
    assert unknown.returncode == 1 and "no such delivery: 999999" in unknown.stderr
    failed_only = await run_cli(settings, "deliveries", "list", "--state", "failed", cwd=tmp_path)
    assert failed_only.stdout == ""


@pytest.mark.slow
async def test_delivery_worker_command_runs_the_forecasts(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """`python -m app delivery-worker` is the delivery worker: its start-up run of the forecasts
    cron derives the figures from the history (the callbacks' worker no longer does)."""
    await gb_history(sessionmaker)
    env = processes.service_env({**cli_env(settings), "DELIVERY_WORKER_METRICS_PORT": "0"})
    worker = processes.ServiceProcess(
        [sys.executable, "-m", "app", "delivery-worker"], env, tmp_path / "deliveries.log"
    )
    worker.start()
    try:
        processes.wait_worker_started(worker, deliveries=True)

        async def figures() -> int:
            async with sessionmaker() as session:
                return int(await session.scalar(select(func.count()).select_from(TimeInState)) or 0)

        for _ in range(300):
            if await figures():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the delivery worker's forecasts run wrote no figure in 30 s")
    finally:
        code = worker.stop()
    assert code == 0
