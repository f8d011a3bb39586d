"""The outbox on the worker's hot path: a trusted callback's move writes its change and no
delivery (`processing.APPLY_IN_ONE`); the statement that numbers the change writes its deliveries,
one per subscription enabled then whose filters let it through (app/changes/repository.py)."""

from __future__ import annotations

from sqlalchemy import func, select

from app.changes.repository import NUMBERING_LOCK
from app.changes.sequencer import number_and_publish
from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.models import Delivery, RegistrationChange
from app.core.settings import Settings
from app.subscriptions import service
from app.subscriptions.schemas import SubscriptionIn
from app.worker.context import WorkerContext
from app.worker.tasks import process_event
from devtools.simulator import SimulatorControl
from tests.worker.test_process_event import deliver


async def test_a_trusted_move_leaves_its_deliveries_to_the_numbering(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    # Every sequencer running here (the worker's, the API's) waits while the test holds the
    # numbering lock: nothing is numbered until the test says so.
    holder = await engine.connect()
    await holder.execute(select(func.pg_advisory_lock(NUMBERING_LOCK)))
    try:
        async with sessions.begin() as session:
            wanted = await service.create(
                session,
                SubscriptionIn(url="http://127.0.0.1:9/x", statuses=["IN_PROGRESS"]),
                allowed_hosts=["127.0.0.1"],
                now=utcnow(),
            )
            other = await service.create(
                session,
                SubscriptionIn(url="http://127.0.0.1:9/y", statuses=["APPROVED"]),
                allowed_hosts=["127.0.0.1"],
                now=utcnow(),
            )
        doc = await sim.create_registration()
        [created] = await sim.events(doc["id"])
        [row] = await deliver(sim, api_url, settings, [created["eventId"]])
        await process_event(worker_ctx, row)  # a GET: IN_QUEUE, which nobody wants
        moved = await sim.transition(doc["id"], "IN_PROGRESS")
        [row] = await deliver(sim, api_url, settings, [moved["eventId"]])
        assert await process_event(worker_ctx, row) == "applied:trusted"

        async def kept() -> list[tuple[str, str, str, int | None]]:
            async with sessions() as session:
                rows = await session.execute(
                    select(Delivery, RegistrationChange.status, RegistrationChange.seq).join(
                        RegistrationChange, RegistrationChange.id == Delivery.change_id
                    )
                )
                return [(d.subscription_id, status, d.state, seq) for d, status, seq in rows]

        # The apply wrote the changes (none numbered yet) and no delivery.
        assert await kept() == []
        # A subscription created now, before the changes reach the feed, reads them from there.
        async with sessions.begin() as session:
            late = await service.create(
                session,
                SubscriptionIn(url="http://127.0.0.1:9/z"),
                allowed_hosts=["127.0.0.1"],
                now=utcnow(),
            )
        await holder.execute(select(func.pg_advisory_unlock(NUMBERING_LOCK)))
        await number_and_publish(sessions, None)  # here, or by a sequencer just before
        rows = await kept()
    finally:
        await holder.close()
        await engine.dispose()
    assert sorted(rows) == sorted(
        [
            (wanted.id, "IN_PROGRESS", "pending", 2),
            (late.id, "IN_QUEUE", "pending", 1),
            (late.id, "IN_PROGRESS", "pending", 2),
        ]
    )
    assert other.id not in {subscription for subscription, *_ in rows}
