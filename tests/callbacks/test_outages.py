"""The "commit before 200" promise when the database or Redis goes away."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from app.core.db import create_engine, create_sessionmaker
from app.core.jobs import create_redis, event_job_id
from app.core.metrics import Metrics
from app.main import create_app
from app.projects.clients import ProjectClients
from app.worker import tasks
from app.worker.context import WorkerContext
from tests.callbacks.conftest import event_body, post_signed
from tests.conftest import make_settings
from tests.support.databases import (
    POSTGRES_ADMIN_URL,
    create_postgres_database,
    drop_postgres_database,
)
from tests.support.processes import PrivateRedis
from tests.support.reads import events
from tests.support.servers import serve


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _allow_connections(database: str, allowed: bool) -> None:
    admin = await asyncpg.connect(_plain(POSTGRES_ADMIN_URL))
    try:
        await admin.execute(
            f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}'
        )
        if not allowed:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
    finally:
        await admin.close()


@pytest.fixture
def outage_database(worker_id: str) -> Iterator[str]:
    name = f"sinch_outage_{worker_id}_{os.getpid()}"
    url = create_postgres_database(name)
    yield url
    # The database's real name (TEST_DB_PREFIX added), as the test itself reads it from the URL.
    asyncio.run(_allow_connections(make_url(url).database or name, True))
    drop_postgres_database(name)


async def test_database_outage_answers_503_never_200_then_recovers(
    outage_database: str, redis_url: str
) -> None:
    settings = make_settings(outage_database, redis_url)
    name = make_url(outage_database).database
    assert name is not None
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        before = event_body(event_id="before-outage")
        assert (await post_signed(client, before)).status_code == 200

        await _allow_connections(name, False)
        during = [event_body(event_id=f"during-{n}") for n in range(5)]
        answers = await asyncio.gather(*(post_signed(client, body) for body in during))
        assert [answer.status_code for answer in answers] == [503] * 5
        assert all(a.headers["content-type"] == "application/problem+json" for a in answers)

        await _allow_connections(name, True)
        after = event_body(event_id="after-outage")
        assert (await post_signed(client, after)).status_code == 200
        # Sinch retries what was refused: now it is kept.
        retried = await asyncio.gather(*(post_signed(client, body) for body in during))
        assert [answer.status_code for answer in retried] == [200] * 5

    kept = {event.event_id for event in await events(settings)}
    assert kept == {"before-outage", "after-outage", *(f"during-{n}" for n in range(5))}


async def test_redis_down_still_answers_200_and_the_sweep_enqueues_later(
    database_url: str, tmp_path: Path
) -> None:
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    settings = make_settings(database_url, redis_server.url, sweep_grace_seconds=0)
    try:
        async with (
            serve(create_app(settings)) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        ):
            redis_server.stop()
            body = event_body(event_id="while-redis-is-down")
            assert (await post_signed(client, body)).status_code == 200
        [event] = await events(settings)
        assert event.state == "received"

        redis_server.start()
        engine = create_engine(settings)
        arq_redis = create_redis(settings)
        http = httpx.AsyncClient()
        try:
            sessionmaker = create_sessionmaker(engine)
            ctx: WorkerContext = {
                "settings": settings,
                "engine": engine,
                "sessionmaker": sessionmaker,
                "redis": arq_redis,
                "metrics": Metrics(),
                # The sweep asks for the projects whose registrations it may fetch facts for.
                "projects": ProjectClients(settings, http, sessionmaker),
            }
            assert await tasks.sweep(ctx) == 1
            assert await tasks.sweep(ctx) == 0  # already queued: enqueueing again is harmless
        finally:
            await http.aclose()
            await arq_redis.aclose()
            await engine.dispose()

        client_redis = aioredis.Redis.from_url(redis_server.url)
        try:
            queued = {m.decode() for m in await client_redis.zrange("arq:queue", 0, -1)}
        finally:
            await client_redis.aclose()
        assert queued == {event_job_id(event.id)}
    finally:
        redis_server.stop()
