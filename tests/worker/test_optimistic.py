"""Processing an event takes no locks (`processing.begin`): when the registration changes between
its read and its write, nothing of that write is kept, and the event is decided again on what the
registration has become."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import driver_connection, utcnow
from app.core.models import REGISTRATIONS
from app.core.settings import Settings
from app.events import processing
from app.registrations.decision import DEFAULT_SKEW
from app.worker.context import WorkerContext
from app.worker.tasks import process_event
from devtools.simulator import SimulatorControl
from tests.support.reads import events, history, registrations
from tests.worker.test_process_event import deliver


async def wait_until_someone_waits_for_a_lock(engine: AsyncEngine) -> None:
    async with asyncio.timeout(10), engine.connect() as connection:
        while not (
            await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        ):
            await asyncio.sleep(0.01)


async def test_registration_changed_after_the_read_is_decided_again_on_what_it_became(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    doc = await sim.create_registration()
    [created] = await sim.events(doc["id"])
    [first] = await deliver(sim, api_url, settings, [created["eventId"]])
    assert await process_event(worker_ctx, first) == "checked:unknown_registration"
    moved = await sim.transition(doc["id"], "IN_PROGRESS")
    [second] = await deliver(sim, api_url, settings, [moved["eventId"]])
    [registration] = await registrations(settings)
    assert registration.status_changed_at is not None
    later = registration.status_changed_at + timedelta(days=1)

    engine: AsyncEngine = worker_ctx["engine"]
    # Another process has the registration's row locked and is moving it past this event: the
    # read sees the row as it was (the event looks trusted), the write waits for the lock.
    async with engine.connect() as other:
        await other.begin()
        await other.execute(
            update(REGISTRATIONS)
            .where(REGISTRATIONS.c.id == doc["id"])
            .values(status_changed_at=later)
        )
        async with engine.connect() as connection:
            attempt = asyncio.create_task(
                processing.begin(
                    await driver_connection(connection), second, now=utcnow(), skew=DEFAULT_SKEW
                )
            )
            await wait_until_someone_waits_for_a_lock(engine)
            await other.commit()
            step = await asyncio.wait_for(attempt, 10)

    # Decided again on the registration as it now is: the event is older than what is known, so
    # it is checked, or ignored when the first GET happened after it (the simulator's times are
    # in milliseconds).
    [*_, kept] = await events(settings)
    if isinstance(step, processing.MustCheck):
        assert step.decision.outcome == "checked:stale"
        assert (kept.state, kept.attempts, kept.outcome) == ("received", 1, None)
    else:
        assert step is not None and step.outcome == "ignored:superseded"
        assert (kept.state, kept.outcome) == ("processed", "ignored:superseded")
    [registration] = await registrations(settings)
    assert registration.status == "IN_QUEUE"
    assert registration.status_changed_at == later
    assert [h.to_status for h in await history(settings)] == ["IN_QUEUE"]
    assert "callback" not in {h.source for h in await history(settings)}
