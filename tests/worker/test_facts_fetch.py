"""Fresh facts where they matter: a trusted callback into a state whose meaning lives in Sinch's
logs (REJECTED, PENDING, PENDING_ATTACHMENTS, ON_HOLD) or into APPROVED costs one more GET, as its
own low-priority job, coalesced per registration. Real simulator, real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.core.jobs import facts_job_id
from app.core.settings import Settings
from app.worker.context import WorkerContext
from app.worker.tasks import process_event, refresh_facts, sweep
from devtools.simulator import SimulatorControl
from tests.support.reads import registrations
from tests.worker.test_process_event import deliver, gets


def sinch_time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def queued_facts_jobs(ctx: WorkerContext, registration_id: str) -> int:
    queued = await ctx["redis"].zrange("arq:queue", 0, -1)
    return sum(job == facts_job_id(registration_id).encode() for job in queued)


async def test_three_moves_in_a_row_cost_one_facts_get_and_the_reason_is_sinchs(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration(lifecycle=[])
    [created] = await sim.events(doc["id"])
    [row] = await deliver(sim, api_url, settings, [created["eventId"]])
    assert await process_event(worker_ctx, row) == "checked:unknown_registration"
    assert await queued_facts_jobs(worker_ctx, doc["id"]) == 0  # a GET's facts are fresh

    moves = [
        await sim.transition(doc["id"], "ON_HOLD", comment="Waiting for the carrier"),
        await sim.transition(doc["id"], "PENDING", comment="Upload a letter of authorisation"),
        await sim.transition(doc["id"], "REJECTED", comment="The brand could not be verified"),
    ]
    gets_before = await gets(sim)
    for move, row_id in zip(
        moves, await deliver(sim, api_url, settings, [m["eventId"] for m in moves]), strict=True
    ):
        assert await process_event(worker_ctx, row_id) == "applied:trusted"
        [registration] = await registrations(settings)
        # The callback's comments are the reason at once, and the status began at its time.
        assert registration.reason_message == move["comments"]
        assert registration.reason_state == move["status"]
        assert registration.status_since == sinch_time(move["createTime"])
        assert registration.facts_due_at is not None
    assert await gets(sim) == gets_before  # trusted: no GET yet
    assert await queued_facts_jobs(worker_ctx, doc["id"]) == 1  # three moves, one job

    # The sweep finds the same need in the database and adds nothing while the job is queued.
    await sweep(worker_ctx)
    assert await queued_facts_jobs(worker_ctx, doc["id"]) == 1

    assert await refresh_facts(worker_ctx, doc["id"]) == "applied"
    assert await gets(sim) == gets_before + 1
    [registration] = await registrations(settings)
    truth = await sim.registration(doc["id"])
    assert registration.sinch == truth
    assert registration.facts_due_at is None
    assert registration.status == "REJECTED"
    assert registration.reason_message == "The brand could not be verified"
    assert registration.status_since == sinch_time(moves[-1]["createTime"])

    # A job that comes after the need was met (by this fetch, or by an event's check) asks no one.
    assert await refresh_facts(worker_ctx, doc["id"]) == "not_due"
    assert await gets(sim) == gets_before + 1


async def test_moves_outside_the_fact_states_cost_no_facts_get(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration()
    [created] = await sim.events(doc["id"])
    [row] = await deliver(sim, api_url, settings, [created["eventId"]])
    await process_event(worker_ctx, row)
    before = await registrations(settings)

    moved = await sim.transition(doc["id"], "IN_PROGRESS")
    [row] = await deliver(sim, api_url, settings, [moved["eventId"]])
    assert await process_event(worker_ctx, row) == "applied:trusted"
    [registration] = await registrations(settings)
    assert registration.facts_due_at is None
    assert await queued_facts_jobs(worker_ctx, doc["id"]) == 0
    # No comments: the reason known before stays; the status began at the callback's time.
    assert registration.reason_message == before[0].reason_message
    assert registration.status_since == sinch_time(moved["createTime"])


async def test_a_registration_sinch_no_longer_knows_stops_waiting_for_facts(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration()
    [created] = await sim.events(doc["id"])
    [row] = await deliver(sim, api_url, settings, [created["eventId"]])
    await process_event(worker_ctx, row)
    moved = await sim.transition(doc["id"], "REJECTED")
    [row] = await deliver(sim, api_url, settings, [moved["eventId"]])
    assert await process_event(worker_ctx, row) == "applied:trusted"
    await sim.reset()  # Sinch forgets it: the GET answers 404

    assert await refresh_facts(worker_ctx, doc["id"]) == "unusable_answer"
    [registration] = await registrations(settings)
    assert registration.facts_due_at is None
    assert registration.status == "REJECTED"


async def test_an_unavailable_sinch_postpones_the_facts_instead_of_hammering_it(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration()
    [created] = await sim.events(doc["id"])
    [row] = await deliver(sim, api_url, settings, [created["eventId"]])
    await process_event(worker_ctx, row)
    moved = await sim.transition(doc["id"], "PENDING")
    [row] = await deliver(sim, api_url, settings, [moved["eventId"]])
    assert await process_event(worker_ctx, row) == "applied:trusted"

    await sim.inject_fault("status", status=503, count=10)
    worker_ctx["job_try"] = settings.job_max_tries  # the last try of the job
    assert await refresh_facts(worker_ctx, doc["id"]) == "sinch_unavailable"
    [registration] = await registrations(settings)
    assert registration.facts_due_at is not None
    assert registration.facts_due_at > datetime.now(UTC) + timedelta(minutes=14)
    # The sweep leaves it until then.
    await worker_ctx["redis"].delete("arq:queue")
    await sweep(worker_ctx)
    assert await queued_facts_jobs(worker_ctx, doc["id"]) == 0
