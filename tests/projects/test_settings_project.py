"""The project the single-project settings define: made at start, its data kept under it, and only
its own callback secrets verify its callbacks."""

from __future__ import annotations

import httpx
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import CallbackEvent, CallbackSecret, Project
from app.core.settings import Settings
from app.main import create_app
from tests.callbacks.conftest import event_body, post_signed
from tests.conftest import CALLBACK_SECRET, make_settings
from tests.support.servers import serve

Sessions = async_sessionmaker[AsyncSession]


def _settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(
        database_url,
        redis_url,
        sinch_project_id="proj-x",
        sinch_key_id="key-x",
        sinch_key_secret=SecretStr("key-secret-x-0123456789"),
    )


async def test_a_start_makes_the_settings_project_and_its_callbacks_belong_to_it(
    database_url: str, redis_url: str, sessionmaker: Sessions
) -> None:
    settings = _settings(database_url, redis_url)
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        answer = await post_signed(client, event_body(event_id="evt-x", registration_id="reg-x"))
        assert answer.status_code == 200, answer.text
    async with sessionmaker() as session:
        projects = (await session.execute(select(Project))).scalars().all()
        events = (await session.execute(select(CallbackEvent))).scalars().all()
    # The placeholder of the fresh database became the settings' project: one project.
    assert [(p.id, p.key_id, p.from_settings) for p in projects] == [("proj-x", "key-x", True)]
    # Its key secret stays in the environment: never written to the database.
    assert projects[0].key_secret_sealed is None
    assert [(e.event_id, e.project_id) for e in events] == [("evt-x", "proj-x")]


async def test_another_projects_callback_secret_does_not_verify_the_settings_project(
    database_url: str, redis_url: str, sessionmaker: Sessions
) -> None:
    other_secret = "other-projects-secret-0123456789"
    now = utcnow()
    async with sessionmaker.begin() as session:
        await session.execute(
            text(
                "INSERT INTO projects (id, name, created_at, updated_at) "
                "VALUES ('proj-other', 'Other', now(), now())"
            )
        )
        session.add(
            CallbackSecret(
                project_id="proj-other",
                secret=other_secret,
                state="current",
                created_at=now,
                updated_at=now,
            )
        )
    settings = _settings(database_url, redis_url)
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        refused = await post_signed(client, event_body(event_id="evt-o"), secret=other_secret)
        accepted = await post_signed(client, event_body(event_id="evt-s"), secret=CALLBACK_SECRET)
    assert refused.status_code == 401
    assert accepted.status_code == 200
    async with sessionmaker() as session:
        kept = (await session.execute(select(CallbackEvent.event_id))).scalars().all()
    assert kept == ["evt-s"]
