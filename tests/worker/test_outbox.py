"""The outbox on the worker's hot path: a trusted callback's move writes its change and its
deliveries in the same statement (`processing.APPLY_IN_ONE`)."""

from __future__ import annotations

from sqlalchemy import select

from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.models import Delivery, RegistrationChange
from app.core.settings import Settings
from app.subscriptions import service
from app.subscriptions.schemas import SubscriptionIn
from app.worker.context import WorkerContext
from app.worker.tasks import process_event
from devtools.simulator import SimulatorControl
from tests.worker.test_process_event import deliver


async def test_a_trusted_move_writes_its_deliveries_with_it(
    sim: SimulatorControl, api_url: str, settings: Settings, worker_ctx: WorkerContext
) -> None:
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
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

        async with sessions() as session:
            rows = (
                await session.execute(
                    select(Delivery, RegistrationChange.status).join(
                        RegistrationChange, RegistrationChange.id == Delivery.change_id
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [(d.subscription_id, status, d.state) for d, status in rows] == [
        (wanted.id, "IN_PROGRESS", "pending")
    ]
    assert other.id not in {d.subscription_id for d, _ in rows}
