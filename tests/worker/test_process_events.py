"""`process_events`: the callbacks one group commit kept, applied by one job.

Callbacks reach the inbox through the real API (the simulator delivers them, signed); the test runs
the worker's job functions with the context the real worker builds, on a real Redis queue.
"""

from __future__ import annotations

from app.core.jobs import event_job_id
from app.core.settings import Settings
from app.worker.context import WorkerContext
from app.worker.tasks import process_event, process_events
from devtools.simulator import SimulatorControl
from tests.support.reads import events, registrations
from tests.worker.test_process_event import deliver, gets


async def test_a_batch_applies_what_needs_no_get_and_hands_each_check_to_a_job_of_its_own(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    known = await sim.create_registration()
    [created] = await sim.events(known["id"])
    [first] = await deliver(sim, api_url, settings, [created["eventId"]])
    assert await process_event(worker_ctx, first) == "checked:unknown_registration"
    before = await gets(sim)
    await worker_ctx["redis"].flushdb()

    # Kept together: two moves of a known registration, in order (trusted), and the first callback
    # of a registration this service does not know yet (it must be checked with a GET).
    moved = await sim.transition(known["id"], "IN_PROGRESS")
    approved = await sim.transition(known["id"], "APPROVED")
    unknown = await sim.create_registration()
    [unknown_created] = await sim.events(unknown["id"])
    rows = await deliver(
        sim,
        api_url,
        settings,
        [moved["eventId"], approved["eventId"], unknown_created["eventId"]],
    )
    handed_on = await process_events(worker_ctx, rows)

    assert handed_on == 1
    assert await gets(sim) == before  # no GET in the batch itself
    by_id = {event.id: event for event in await events(settings)}
    assert [by_id[row].outcome for row in rows[:2]] == ["applied:trusted", "applied:trusted"]
    [local] = [r for r in await registrations(settings) if r.id == known["id"]]
    assert local.status == "APPROVED"
    # The check waits in a job of its own, its try not counted yet (that job counts it).
    checked = rows[2]
    assert by_id[checked].state == "received" and by_id[checked].attempts == 0
    queued = {job.job_id for job in await worker_ctx["redis"].queued_jobs()}
    assert event_job_id(checked) in queued

    assert await process_event(worker_ctx, checked) == "checked:unknown_registration"
    assert await gets(sim) == before + 1
    assert {r.id: r.status for r in await registrations(settings)}[unknown["id"]] == "IN_QUEUE"
    [after] = [event for event in await events(settings) if event.id == checked]
    assert after.state == "processed" and after.attempts == 1


async def test_a_batch_run_twice_changes_nothing_the_second_time(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration()
    [created] = await sim.events(doc["id"])
    [first] = await deliver(sim, api_url, settings, [created["eventId"]])
    await process_event(worker_ctx, first)
    moved = await sim.transition(doc["id"], "IN_PROGRESS")
    rows = await deliver(sim, api_url, settings, [moved["eventId"]])

    assert await process_events(worker_ctx, rows) == 0
    kept = {event.id: (event.state, event.outcome) for event in await events(settings)}
    # A worker that died after the batch's commits: arq runs the same job again.
    assert await process_events(worker_ctx, rows) == 0
    assert {event.id: (event.state, event.outcome) for event in await events(settings)} == kept


async def test_a_batch_of_interleaved_registrations_applies_each_in_its_own_order(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    # One read serves a whole batch (processing.begin_many): an event that follows another of its
    # registration in the batch must be decided on what that one made of it, not on the batch's
    # read. Two registrations interleaved, each moved twice: every move applied, in order.
    docs = [await sim.create_registration() for _ in range(2)]
    for doc in docs:
        [created] = await sim.events(doc["id"])
        [row] = await deliver(sim, api_url, settings, [created["eventId"]])
        await process_event(worker_ctx, row)
    await worker_ctx["redis"].flushdb()
    a, b = (doc["id"] for doc in docs)
    a1 = await sim.transition(a, "IN_PROGRESS")
    b1 = await sim.transition(b, "IN_PROGRESS")
    a2 = await sim.transition(a, "APPROVED")
    b2 = await sim.transition(b, "REJECTED")
    sent = [a1, b1, a2, b2]
    rows = await deliver(sim, api_url, settings, [event["eventId"] for event in sent])

    assert await process_events(worker_ctx, rows) == 0
    by_id = {event.id: event for event in await events(settings)}
    assert [by_id[row].outcome for row in rows] == ["applied:trusted"] * 4
    statuses = {r.id: r.status for r in await registrations(settings)}
    assert (statuses[a], statuses[b]) == ("APPROVED", "REJECTED")
