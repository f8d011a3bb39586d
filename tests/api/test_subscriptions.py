"""`/v1/subscriptions` and `/v1/deliveries` over real HTTP, and the outbox: a
delivery per matching subscription written as each change is numbered.
Sending is tested with real receivers and processes in tests/subscriptions/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.sequencer import number_and_publish
from app.core.db import utcnow
from app.core.models import Delivery, HistorySource
from app.core.settings import Settings
from app.main import create_app
from app.registrations.service import apply_snapshot
from app.sinch.schemas import SinchRegistration
from devtools.simulator import SimulatorServer
from tests.api.conftest import AUTH, api_settings, assert_problem
from tests.support.projects import settings_project
from tests.support.servers import serve

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)
HOOK = "http://127.0.0.1:9/hooks"


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    return api_settings(
        sim_server, database_url, redis_url, subscription_allowed_hosts=["127.0.0.1"]
    )


@pytest.fixture
async def v1(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=30) as client,
    ):
        yield client


async def subscribe(v1: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await v1.post("/v1/subscriptions", json={"url": HOOK, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def put(sessionmaker: Sessions, registration_id: str, status: str, at: datetime) -> None:
    document = {
        "id": registration_id,
        "status": status,
        "registrationType": "ALPHANUMERIC_SENDER_ID",
        "updateTime": at.replace(tzinfo=None).isoformat(),
    }
    async with sessionmaker.begin() as session:
        await apply_snapshot(
            session,
            SinchRegistration.from_document(document),
            project_id=await settings_project(session),
            source=HistorySource.REFETCH,
            event_id=None,
            fetched_at=utcnow(),
            now=utcnow(),
        )


async def deliveries(sessionmaker: Sessions) -> list[Delivery]:
    async with sessionmaker() as session:
        return list((await session.execute(select(Delivery).order_by(Delivery.id))).scalars())


async def test_a_subscription_is_created_read_changed_rotated_and_deleted(
    v1: httpx.AsyncClient,
) -> None:
    created = await subscribe(v1, statuses=["APPROVED"], description="billing")
    assert created["secret"].startswith("whsec_")
    assert created["statuses"] == ["APPROVED"] and created["registrationTypes"] is None
    assert created["enabled"] is True
    path = f"/v1/subscriptions/{created['id']}"

    read = (await v1.get(path)).json()
    assert "secret" not in read  # shown only at creation and rotation
    assert [s["id"] for s in (await v1.get("/v1/subscriptions")).json()["items"]] == [created["id"]]
    changed = await v1.patch(path, json={"statuses": None, "enabled": False})
    assert changed.status_code == 200
    assert (changed.json()["statuses"], changed.json()["enabled"]) == (None, False)
    assert changed.json()["description"] == "billing"  # untouched

    rotated = (await v1.post(f"{path}/rotate-secret")).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    until = datetime.fromisoformat(rotated["previousSecretUntil"])
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(hours=24)

    assert (await v1.delete(path)).status_code == 204
    assert_problem(await v1.get(path), 404)
    assert_problem(await v1.delete(path), 404)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x",
        "http://user:secret@127.0.0.1/x",
        "http://10.1.2.3/x",
        "http://localhost/x",
        "not a url",
    ],
)
async def test_a_url_the_service_may_not_call_is_422(v1: httpx.AsyncClient, url: str) -> None:
    body = assert_problem(await v1.post("/v1/subscriptions", json={"url": url}), 422)
    assert "secret" not in body.get("detail", "")  # the credentials are never echoed
    created = await subscribe(v1)
    path = f"/v1/subscriptions/{created['id']}"
    assert_problem(await v1.patch(path, json={"url": url}), 422)


async def test_changes_write_a_delivery_for_each_matching_subscription(
    v1: httpx.AsyncClient, sessionmaker: Sessions, settings: Settings
) -> None:
    every = await subscribe(v1)
    approved = await subscribe(v1, statuses=["APPROVED", "REJECTED"])
    long_numbers = await subscribe(v1, registrationTypes=["LONG_NUMBER"])
    paused = await subscribe(v1)
    await v1.patch(f"/v1/subscriptions/{paused['id']}", json={"enabled": False})

    await put(sessionmaker, "reg-1", "IN_QUEUE", T0)
    await put(sessionmaker, "reg-1", "APPROVED", T0 + timedelta(minutes=1))
    await put(sessionmaker, "reg-1", "APPROVED", T0 + timedelta(minutes=2))  # no change: none
    await number_and_publish(sessionmaker, None)  # the changes reach the feed: their deliveries
    rows = await deliveries(sessionmaker)
    assert sorted((d.subscription_id, d.state) for d in rows) == sorted(
        [(every["id"], "pending"), (every["id"], "pending"), (approved["id"], "pending")]
    )
    assert long_numbers["id"] not in {d.subscription_id for d in rows}

    listed = (await v1.get(f"/v1/subscriptions/{every['id']}/deliveries")).json()
    assert [(d["seq"], d["state"], d["attempts"]) for d in listed["items"]] == [
        (2, "pending", 0),
        (1, "pending", 0),
    ]
    newest = listed["items"][0]["id"]
    assert (await v1.post(f"/v1/deliveries/{newest}/retry")).status_code == 202
    assert_problem(await v1.post("/v1/deliveries/999999/retry"), 404)
    assert_problem(await v1.get("/v1/subscriptions/sub_nope/deliveries"), 404)

    # /metrics: how long each subscription's oldest delivery has waited (0 for none).
    metrics = (await v1.get("/metrics")).text
    waiting = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("subscription_oldest_pending_delivery_seconds{")
    }
    assert waiting[every["id"]] > 0 and waiting[approved["id"]] > 0
    assert waiting[long_numbers["id"]] == 0
