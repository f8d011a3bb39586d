"""`/healthz` and `/readyz` as CONTRACT.md says, over real HTTP."""

from __future__ import annotations

import httpx

from app.main import create_app
from tests.conftest import make_settings
from tests.support.servers import free_port, serve


async def test_healthz_and_readyz_answer_ok(api: httpx.AsyncClient) -> None:
    health = await api.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"

    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_readyz_names_redis_when_it_is_down(database_url: str) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(make_settings(database_url, dead_redis))
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok"


async def test_readyz_names_the_database_when_it_is_down(redis_url: str) -> None:
    nobody_listens = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/sinch"
    app = create_app(make_settings(nobody_listens, redis_url))
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] != "ok"
    assert ready.json()["checks"]["redis"] == "ok"
