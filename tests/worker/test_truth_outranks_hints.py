"""A hint never outranks the truth: a callback from the future, and a registration it pinned.

Callbacks reach the inbox through the real API over HTTP, signed here with a plain HMAC (not the
service's own signer); the worker's job function runs with the context the real worker builds, and
the simulator plays Sinch over HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from app.core.db import create_engine, utcnow
from app.core.models import REGISTRATIONS
from app.core.settings import Settings
from app.registrations.reconcile import reconcile
from app.worker.context import WorkerContext
from app.worker.tasks import process_event
from devtools.simulator import SimulatorControl
from tests.conftest import API_TOKEN
from tests.support.reads import events, registrations

CALLBACK_PATH = "/callbacks/sinch/registrations"
TEN_YEARS = timedelta(days=3653)


async def post_signed(
    http: httpx.AsyncClient, api_url: str, settings: Settings, document: dict[str, Any]
) -> int:
    """POST `document` as Sinch would (HMAC-SHA1 hex of the raw bytes); answers the new row id."""
    body = json.dumps(document).encode()
    secret = settings.sinch_callback_secrets[0].get_secret_value().encode()
    signature = hmac.new(secret, body, hashlib.sha1).hexdigest()
    before = {event.id for event in await events(settings)}
    response = await http.post(
        api_url + CALLBACK_PATH, content=body, headers={"X-Sinch-Signature": signature}
    )
    assert response.status_code == 200
    [row_id] = [event.id for event in await events(settings) if event.id not in before]
    return row_id


async def deliver_recorded(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext, doc_id: str
) -> list[str]:
    """Deliver every callback the simulator recorded for `doc_id` and process each; outcomes."""
    outcomes = []
    for recorded in await sim.events(doc_id):
        before = {event.id for event in await events(settings)}
        [result] = await sim.deliver(api_url + CALLBACK_PATH, event_ids=[recorded["eventId"]])
        assert result["status"] == 200
        for event in await events(settings):
            if event.id not in before:
                outcomes.append(await process_event(worker_ctx, event.id))
    return outcomes


async def local_status(settings: Settings) -> tuple[str, datetime | None]:
    [registration] = await registrations(settings)
    return registration.status, registration.status_changed_at


async def test_a_callback_from_the_future_is_checked_and_later_callbacks_still_apply(
    sim: SimulatorControl,
    api_url: str,
    settings: Settings,
    worker_ctx: WorkerContext,
    http: httpx.AsyncClient,
) -> None:
    doc = await sim.create_registration()
    assert await deliver_recorded(sim, api_url, settings, worker_ctx, doc["id"]) == [
        "checked:unknown_registration"
    ]

    # Signed and well formed, allowed by the table (IN_QUEUE -> PENDING), but ten years ahead.
    future = (utcnow() + TEN_YEARS).replace(microsecond=0, tzinfo=None).isoformat()
    row_id = await post_signed(
        http,
        api_url,
        settings,
        {
            "eventId": "from-the-future",
            "resourceId": doc["id"],
            "status": "PENDING",
            "createTime": future,
        },
    )
    assert await process_event(worker_ctx, row_id) == "checked:future_time"
    status, changed_at = await local_status(settings)
    assert status == "IN_QUEUE"  # Sinch's answer, not the claim
    assert changed_at is not None and changed_at <= utcnow()

    # The registration's real life goes on and is applied as it comes, trusted.
    await sim.transition(doc["id"], "IN_PROGRESS")
    await sim.transition(doc["id"], "APPROVED")
    outcomes = await deliver_recorded(sim, api_url, settings, worker_ctx, doc["id"])
    assert outcomes[-2:] == ["applied:trusted", "applied:trusted"]
    [registration] = await registrations(settings)
    assert registration.status == "APPROVED" == (await sim.registration(doc["id"]))["status"]


async def pin_in_the_future(settings: Settings, registration_id: str, status: str) -> None:
    """Leave the registration as a version without the future check did: a callback claiming a
    time ten years ahead applied as trusted."""
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(REGISTRATIONS)
                .where(REGISTRATIONS.c.id == registration_id)
                .values(status=status, status_changed_at=utcnow() + TEN_YEARS)
            )
    finally:
        await engine.dispose()


async def test_refresh_repairs_a_registration_a_future_callback_pinned(
    sim: SimulatorControl,
    api_url: str,
    settings: Settings,
    worker_ctx: WorkerContext,
    http: httpx.AsyncClient,
) -> None:
    doc = await sim.create_registration(lifecycle=["IN_PROGRESS"])
    await deliver_recorded(sim, api_url, settings, worker_ctx, doc["id"])
    await pin_in_the_future(settings, doc["id"], "REJECTED")

    response = await http.post(
        f"{api_url}/v1/registrations/{doc['id']}/refresh",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert response.status_code == 200
    assert response.json()["status"] == "IN_PROGRESS"
    history = (
        await http.get(
            f"{api_url}/v1/registrations/{doc['id']}/history",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
    ).json()["items"]
    last = history[-1]
    assert (last["fromStatus"], last["toStatus"], last["source"]) == (
        "REJECTED",
        "IN_PROGRESS",
        "refetch",
    )
    assert "overruled a callback" in last["note"]
    assert all(item["note"] is None for item in history[:-1])


async def test_a_stale_callback_behind_a_pinned_registration_repairs_it(
    sim: SimulatorControl,
    api_url: str,
    settings: Settings,
    worker_ctx: WorkerContext,
) -> None:
    doc = await sim.create_registration()
    await deliver_recorded(sim, api_url, settings, worker_ctx, doc["id"])
    await pin_in_the_future(settings, doc["id"], "PENDING")

    # Every real callback now looks stale; its GET must be applied, not dropped.
    await sim.transition(doc["id"], "IN_PROGRESS")
    [*_, last] = await sim.events(doc["id"])
    [result] = await sim.deliver(api_url + CALLBACK_PATH, event_ids=[last["eventId"]])
    assert result["status"] == 200
    [*_, kept] = await events(settings)
    assert await process_event(worker_ctx, kept.id) == "checked:stale"
    status, changed_at = await local_status(settings)
    assert status == "IN_PROGRESS"
    assert changed_at is not None and changed_at < datetime.now(UTC) + timedelta(minutes=5)


async def test_full_reconciliation_repairs_a_pinned_registration(
    sim: SimulatorControl,
    api_url: str,
    settings: Settings,
    worker_ctx: WorkerContext,
) -> None:
    doc = await sim.create_registration(lifecycle=["IN_PROGRESS", "APPROVED"])
    await deliver_recorded(sim, api_url, settings, worker_ctx, doc["id"])
    await pin_in_the_future(settings, doc["id"], "REJECTED")

    sinch = worker_ctx["sinch"]
    assert sinch is not None
    report = await reconcile(worker_ctx["sessionmaker"], sinch, full=True)
    assert report.changed == 1
    status, _ = await local_status(settings)
    assert status == "APPROVED"
