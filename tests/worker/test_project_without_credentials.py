"""A deployment whose settings' project has no Sinch credentials (no `SINCH_*` key) and serves
another project added with its own key: the worker says so once at start, then its crons skip
that project quietly (no facts fetch enqueued for it every sweep, nothing logged every cycle)
and keep serving the other one. Real simulator (as the other project's Sinch), real Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import insert

from app.audit.repository import Actor
from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.jobs import facts_job_id
from app.core.models import REGISTRATIONS, Registration
from app.core.settings import Settings
from app.projects.secrets import box_of
from app.projects.service import add_project
from app.registrations import repository
from app.registrations.reconcile import WATERMARK
from app.worker.tasks import reconcile_changes, sweep
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.conftest import make_settings
from tests.support.logs import Records, recorded
from tests.support.projects import settings_project
from tests.support.worker import worker_context
from tests.worker.test_facts_fetch import queued_facts_jobs


@pytest.fixture
def app_log() -> Iterator[Records]:
    with recorded("app") as records:
        yield records


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    """Sinch is the simulator, but the settings name no project key: only projects added with
    their own keys (sealed with PROJECT_SECRETS_KEY) can be asked."""
    return make_settings(
        database_url,
        redis_url,
        sinch_api_base_url=sim_server.base_url,
        sinch_auth_url=sim_server.auth_url,
        project_secrets_key=SecretStr(Fernet.generate_key().decode()),
        worker_metrics_port=0,
    )


async def test_a_project_without_credentials_is_skipped_quietly_every_cycle(
    settings: Settings, sim_server: SimulatorServer, sim: SimulatorControl, app_log: Records
) -> None:
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    try:
        async with worker_context(settings) as ctx:
            # Said once, at start.
            [started] = app_log.at(logging.WARNING)
            assert "SINCH_KEY_SECRET is not set" in started and "not reconciled" in started
            b = sim_server.project_id
            now = utcnow()
            async with sessions.begin() as session:
                await add_project(
                    session,
                    box_of(settings.project_secrets_key),
                    project_id=b,
                    name="Brand B",
                    key_id=sim_server.key_id,
                    key_secret=SecretStr(sim_server.key_secret),
                    callback_secret=None,
                    actor=Actor("test", "test"),
                    now=now,
                )
                a = await settings_project(session)
                # Both wait for their facts (a callback moved them into PENDING).
                await session.execute(
                    insert(REGISTRATIONS),
                    [
                        {
                            "id": registration_id,
                            "project_id": project_id,
                            "status": "PENDING",
                            "created_at": now,
                            "updated_at": now,
                            "facts_due_at": now - timedelta(minutes=1),
                        }
                        for registration_id, project_id in (("reg-a", a), ("reg-b", b))
                    ],
                )
            made = await sim.create_registration()

            for _ in range(3):  # sweep after sweep, as the cron runs it
                # The jobs taken (as a worker would): the next sweep may enqueue them again.
                await ctx["redis"].delete(
                    "arq:queue", *(f"arq:job:{facts_job_id(r)}" for r in ("reg-a", "reg-b"))
                )
                await sweep(ctx)
                assert await queued_facts_jobs(ctx, "reg-b") == 1
                assert await queued_facts_jobs(ctx, "reg-a") == 0
                # Reconciliation: the other project's registrations, none for the settings' one.
                assert await reconcile_changes(ctx) >= 1

            assert app_log.at(logging.WARNING) == [started]
            assert app_log.at(logging.ERROR) == []
            async with sessions() as session:
                assert await repository.get_mark(session, a, WATERMARK) is None
                assert await repository.get_mark(session, b, WATERMARK) is not None
                reconciled = await session.get(Registration, made["id"])
                assert reconciled is not None and reconciled.project_id == b
    finally:
        await engine.dispose()
