"""`process_event` against the simulator over real HTTP.

Callbacks reach the inbox through the real API (the simulator delivers them, signed); the test then
runs the worker's job function with the context the real worker builds.
"""

from __future__ import annotations

import json

import httpx
import pytest
from arq import Retry

from app.core.settings import Settings
from app.worker.context import WorkerContext
from app.worker.tasks import process_event
from devtools.simulator import SimulatorControl
from tests.support.reads import events, history, registrations
from tests.support.signing import sign

CALLBACK_PATH = "/callbacks/sinch/registrations"


async def inbox_ids(settings: Settings) -> list[int]:
    return [event.id for event in await events(settings)]


async def deliver(
    sim: SimulatorControl, api_url: str, settings: Settings, event_ids: list[str]
) -> list[int]:
    before = set(await inbox_ids(settings))
    results = await sim.deliver(api_url + CALLBACK_PATH, event_ids=event_ids)
    assert [result["status"] for result in results] == [200] * len(results)
    return [row_id for row_id in await inbox_ids(settings) if row_id not in before]


async def gets(sim: SimulatorControl) -> int:
    return (await sim.stats()).get("getRegistration", 0)


async def test_unknown_registration_is_fetched_then_trusted_events_apply_without_a_get(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration(tags=["#t1"])
    [created] = await sim.events(doc["id"])
    [first] = await deliver(sim, api_url, settings, [created["eventId"]])

    assert await process_event(worker_ctx, first) == "checked:unknown_registration"
    assert await gets(sim) == 1
    [registration] = await registrations(settings)
    assert registration.status == "IN_QUEUE"
    assert registration.sinch == await sim.registration(doc["id"])
    assert registration.last_synced_at is not None

    moved = await sim.transition(doc["id"], "IN_PROGRESS")
    [second] = await deliver(sim, api_url, settings, [moved["eventId"]])
    assert await process_event(worker_ctx, second) == "applied:trusted"
    assert await gets(sim) == 1  # trusted: no GET

    [registration] = await registrations(settings)
    assert registration.status == "IN_PROGRESS"
    assert [
        (h.from_status, h.to_status, h.source, h.event_id) for h in await history(settings)
    ] == [
        (None, "IN_QUEUE", "refetch", created["eventId"]),
        ("IN_QUEUE", "IN_PROGRESS", "callback", moved["eventId"]),
    ]
    [*_, kept] = await events(settings)
    assert (kept.state, kept.outcome, kept.attempts) == ("processed", "applied:trusted", 1)
    assert kept.processed_at is not None


async def test_invalid_transition_is_checked_and_the_truth_applied(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration(lifecycle=["IN_PROGRESS", "APPROVED"])
    recorded = await sim.events(doc["id"])
    for row_id in await deliver(sim, api_url, settings, [e["eventId"] for e in recorded]):
        await process_event(worker_ctx, row_id)
    [registration] = await registrations(settings)
    assert registration.status == "APPROVED"

    # An approved registration is updated and goes back to IN_PROGRESS: the table calls it
    # invalid, so it is checked, and the GET's answer is applied.
    back = await sim.transition(doc["id"], "IN_PROGRESS")
    before = await gets(sim)
    [row_id] = await deliver(sim, api_url, settings, [back["eventId"]])
    assert await process_event(worker_ctx, row_id) == "checked:invalid_transition"
    assert await gets(sim) == before + 1
    [registration] = await registrations(settings)
    assert registration.status == "IN_PROGRESS"
    assert (await history(settings))[-1].source == "refetch"


async def test_stale_event_after_a_get_is_ignored_without_another_get(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration(lifecycle=["IN_PROGRESS", "APPROVED"])
    _created, progress, approved = await sim.events(doc["id"])
    [latest] = await deliver(sim, api_url, settings, [approved["eventId"]])
    assert await process_event(worker_ctx, latest) == "checked:unknown_registration"
    before = await gets(sim)

    [late] = await deliver(sim, api_url, settings, [progress["eventId"]])
    assert await process_event(worker_ctx, late) == "ignored:superseded"
    assert await gets(sim) == before
    [registration] = await registrations(settings)
    assert registration.status == "APPROVED"
    assert len(await history(settings)) == 1


async def test_processing_twice_changes_nothing(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration()
    [row_id] = await deliver(
        sim, api_url, settings, [e["eventId"] for e in await sim.events(doc["id"])]
    )
    await process_event(worker_ctx, row_id)
    snapshot = [(h.to_status, h.at) for h in await history(settings)]
    assert await process_event(worker_ctx, row_id) == "already_done"
    assert [(h.to_status, h.at) for h in await history(settings)] == snapshot


async def test_registration_unknown_at_sinch_marks_the_event_invalid(
    api_url: str, settings: Settings, worker_ctx: WorkerContext, http: httpx.AsyncClient
) -> None:
    body = json.dumps(
        {
            "eventId": "e-404",
            "resourceId": "no-such-registration",
            "status": "APPROVED",
            "createTime": "2026-01-01T10:00:00",
        }
    ).encode()
    secret = settings.sinch_callback_secrets[0].get_secret_value()
    response = await http.post(
        api_url + CALLBACK_PATH, content=body, headers={"X-Sinch-Signature": sign(body, secret)}
    )
    assert response.status_code == 200
    [event] = await events(settings)
    assert await process_event(worker_ctx, event.id) == "invalid:unknown_at_sinch"
    [event] = await events(settings)
    assert event.state == "invalid"
    assert "404" in (event.last_error or "")
    assert await registrations(settings) == []


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (b"this is not json", "invalid:not_json"),
        (b'{"status": "APPROVED"}', "invalid:no_registration_id"),
    ],
)
async def test_unusable_bodies_become_invalid_with_a_reason(
    api_url: str,
    settings: Settings,
    worker_ctx: WorkerContext,
    http: httpx.AsyncClient,
    body: bytes,
    outcome: str,
) -> None:
    secret = settings.sinch_callback_secrets[0].get_secret_value()
    await http.post(
        api_url + CALLBACK_PATH, content=body, headers={"X-Sinch-Signature": sign(body, secret)}
    )
    [event] = await events(settings)
    assert await process_event(worker_ctx, event.id) == outcome
    [event] = await events(settings)
    assert event.state == "invalid"
    assert event.last_error


async def test_retryable_failure_retries_then_fails_and_stays_replayable(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration()
    [row_id] = await deliver(
        sim, api_url, settings, [e["eventId"] for e in await sim.events(doc["id"])]
    )
    await sim.inject_fault("status", status=503, count=1000, paths="api")

    worker_ctx["job_try"] = 1
    with pytest.raises(Retry):
        await process_event(worker_ctx, row_id)
    [event] = await events(settings)
    assert event.state == "received"
    assert event.last_error

    worker_ctx["job_try"] = settings.job_max_tries
    assert await process_event(worker_ctx, row_id) == "failed:sinch_unavailable"
    [event] = await events(settings)
    assert (event.state, event.attempts) == ("failed", 2)
    assert event.last_error

    # Sinch is back: the failed event is replayed and converges.
    await sim.clear_faults()
    from app.core.db import create_engine, create_sessionmaker
    from app.events.repository import reset_for_replay

    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine).begin() as session:
            assert await reset_for_replay(session, row_id)
    finally:
        await engine.dispose()
    worker_ctx["job_try"] = 1
    assert await process_event(worker_ctx, row_id) == "checked:unknown_registration"
    [registration] = await registrations(settings)
    assert registration.status == "IN_QUEUE"
