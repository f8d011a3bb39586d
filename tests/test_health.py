"""`/healthz` and `/readyz` as docs/api.md says, over real HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.health import REDIS_PROBE_KEY
from app.main import create_app
from tests.conftest import make_settings
from tests.support.logs import Records, recorded
from tests.support.processes import private_redis
from tests.support.servers import free_port, serve

ALL_OK = {"database": "ok", "redis": "ok", "callbackSecret": "ok"}


async def test_healthz_and_readyz_answer_ok(api: httpx.AsyncClient) -> None:
    health = await api.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"

    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": ALL_OK}


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


async def test_readyz_is_not_ready_without_a_callback_secret(
    database_url: str, redis_url: str
) -> None:
    # An empty SINCH_CALLBACK_SECRETS (e.g. a copied .env.example): callbacks answer 503, so the
    # process is not ready for Sinch, though its database and Redis answer.
    app = create_app(make_settings(database_url, redis_url, sinch_callback_secrets=[]))
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        ready = await client.get("/readyz")
        callback = await client.post("/callbacks/sinch/registrations", content=b"{}")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "checks": {
            "database": "ok",
            "redis": "ok",
            "callbackSecret": "not configured: callbacks answer 503",
        },
    }
    assert callback.status_code == 503


async def test_readyz_names_the_database_when_it_is_down(redis_url: str) -> None:
    nobody_listens = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/sinch"
    app = create_app(make_settings(nobody_listens, redis_url))
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] != "ok"
    assert ready.json()["checks"]["redis"] == "ok"


@pytest.fixture
def health_log() -> Iterator[Records]:
    with recorded("app.health") as records:
        yield records


async def _readyz(client: httpx.AsyncClient) -> tuple[int, dict[str, str]]:
    response = await client.get("/readyz")
    checks: dict[str, str] = response.json()["checks"]
    return response.status_code, checks


async def test_readyz_refuses_a_full_redis_and_logs_it_once(
    database_url: str, tmp_path: Path, health_log: Records
) -> None:
    with private_redis(tmp_path, ("--maxmemory", "64mb")) as server:
        app = create_app(make_settings(database_url, server.url))
        async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
            assert await _readyz(client) == (200, ALL_OK)
            # The write probe expires by itself.
            with server.client() as redis_client:
                assert 0 < redis_client.pttl(REDIS_PROBE_KEY) <= 10_000

            server.fill()
            for _ in range(3):
                status, checks = await _readyz(client)
                assert status == 503
                assert checks["database"] == "ok"
                assert checks["redis"].startswith("full: "), checks
                assert "maxmemory" in checks["redis"]
            errors = health_log.at(logging.ERROR)
            assert len(errors) == 1, errors
            assert "Redis cannot hold the job queue: full" in errors[0]

            server.free()
            assert await _readyz(client) == (200, ALL_OK)
            assert len(health_log.at(logging.WARNING)) == 1
            assert len(health_log.at(logging.ERROR)) == 1


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-random"])
async def test_readyz_refuses_a_redis_that_evicts_keys(
    database_url: str, tmp_path: Path, policy: str, health_log: Records
) -> None:
    with private_redis(tmp_path, ("--maxmemory", "64mb", "--maxmemory-policy", policy)) as server:
        app = create_app(make_settings(database_url, server.url))
        async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
            for _ in range(2):
                status, checks = await _readyz(client)
                assert status == 503
                assert checks["redis"] == (
                    f"evicts keys (maxmemory-policy {policy}); arq needs noeviction"
                )
            assert len(health_log.at(logging.ERROR)) == 1

            with server.client() as redis_client:
                redis_client.config_set("maxmemory-policy", "noeviction")
            assert await _readyz(client) == (200, ALL_OK)


async def test_readyz_takes_a_redis_that_refuses_info_as_unknown_not_failed(
    database_url: str, tmp_path: Path
) -> None:
    # Hosted Redis may refuse INFO or CONFIG: what it does not tell is not held against it.
    hidden = ("--rename-command", "INFO", "", "--rename-command", "CONFIG", "")
    with private_redis(tmp_path, hidden) as server:
        app = create_app(make_settings(database_url, server.url))
        async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
            assert await _readyz(client) == (200, ALL_OK)
