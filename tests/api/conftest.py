"""Fixtures for the internal API's tests: the simulator as Sinch, an authorized client, and ways
to put data in through the service's own code paths (apply_snapshot, signed callbacks, the
processing steps the worker runs)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import HistorySource
from app.core.settings import Settings
from app.registrations.service import apply_snapshot
from app.sinch.schemas import SinchRegistration
from devtools.simulator import SimulatorServer
from tests.conftest import API_TOKEN, CALLBACK_SECRET, make_settings
from tests.support.projects import settings_project
from tests.support.servers import serve
from tests.support.signing import sign

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PROBLEM = "application/problem+json"
CALLBACK_PATH = "/callbacks/sinch/registrations"


def api_settings(
    sim_server: SimulatorServer, database_url: str, redis_url: str, **overrides: Any
) -> Settings:
    """The service pointed at the simulator as Sinch; callbacks signed with CALLBACK_SECRET."""
    values: dict[str, Any] = {
        "sinch_api_base_url": sim_server.base_url,
        "sinch_auth_url": sim_server.auth_url,
        "sinch_project_id": sim_server.project_id,
        "sinch_key_id": sim_server.key_id,
        "sinch_key_secret": sim_server.key_secret,
        **overrides,
    }
    return make_settings(database_url, redis_url, **values)


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    return api_settings(sim_server, database_url, redis_url)


@pytest.fixture
async def v1(api: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same server as `api`, sending the bearer token."""
    async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH, timeout=30) as client:
        yield client


def sinch_document(
    registration_id: str,
    status: str = "IN_QUEUE",
    *,
    at: datetime | None = None,
    registration_type: str = "ALPHANUMERIC_SENDER_ID",
) -> dict[str, Any]:
    when = (at or datetime(2026, 1, 1, 10, 0, tzinfo=UTC)).astimezone(UTC)
    return {
        "id": registration_id,
        "status": status,
        "registrationType": registration_type,
        "createTime": "2026-01-01T09:00:00",
        "updateTime": when.replace(tzinfo=None).isoformat(),
        "senderId": "ACME",
    }


async def put_registration(
    sessionmaker: async_sessionmaker[AsyncSession],
    registration_id: str,
    status: str = "IN_QUEUE",
    *,
    at: datetime | None = None,
    registration_type: str = "ALPHANUMERIC_SENDER_ID",
    source: HistorySource = HistorySource.RECONCILE,
    project_id: str | None = None,
) -> None:
    """Apply a Sinch document as the worker would, in its own transaction, for `project_id`
    (None: the settings' project)."""
    document = sinch_document(registration_id, status, at=at, registration_type=registration_type)
    await put_document(sessionmaker, document, source=source, project_id=project_id)


async def put_document(
    sessionmaker: async_sessionmaker[AsyncSession],
    document: dict[str, Any],
    *,
    source: HistorySource = HistorySource.RECONCILE,
    project_id: str | None = None,
) -> None:
    """Apply any Sinch document as the worker would, in its own transaction, for `project_id`
    (None: the settings' project)."""
    async with sessionmaker.begin() as session:
        await apply_snapshot(
            session,
            SinchRegistration.from_document(document),
            project_id=project_id or await settings_project(session),
            source=source,
            event_id=None,
            fetched_at=utcnow(),
            now=utcnow(),
        )


async def post_callback(client: httpx.AsyncClient, body: bytes) -> None:
    """Deliver a callback through the real endpoint, signed with the current secret."""
    response = await client.post(
        CALLBACK_PATH,
        content=body,
        headers={"X-Sinch-Signature": sign(body, CALLBACK_SECRET)},
    )
    assert response.status_code == 200, response.text


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    return body


@contextmanager
def served_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve `app` (tests/support/servers.serve) on its own event loop in a thread, for callers
    that make blocking requests (schemathesis uses `requests`); yields the base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-under-test", daemon=True)
    thread.start()
    server = serve(app)
    try:
        base_url = asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(30)
        try:
            yield base_url
        finally:
            asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def refresh_catalog(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> str:
    """The settings' project's catalog refreshed from the simulator as Sinch (its markets and
    policies, as the worker's cron keeps them), so the submit path can check requests; answers
    the project's id."""
    from app.catalog import service
    from app.projects.service import ensure_settings_project
    from app.sinch.client import SinchClient

    async with httpx.AsyncClient(timeout=30) as http:
        sinch = SinchClient.from_settings(settings, http)
        async with sessionmaker.begin() as session:
            await ensure_settings_project(session, settings, utcnow())
        await service.refresh(sessionmaker, sinch, now=utcnow())
    return sinch.project_id
