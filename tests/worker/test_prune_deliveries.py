"""Pruning the change feed never loses a pending delivery silently (a delivery's foreign key to its
change cascades): an enabled subscription's pending deliveries hold the pruning back; a disabled
one's are given up first, marked and counted. The worker's own prune job, on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.outbox import GIVEN_UP_PRUNED
from app.changes.sequencer import number_and_publish
from app.core import idempotency
from app.core.db import utcnow
from app.core.models import (
    IDEMPOTENCY_KEYS,
    Delivery,
    DeliveryState,
    RegistrationChange,
    Subscription,
)
from app.core.settings import Settings
from app.subscriptions import service
from app.subscriptions.schemas import SubscriptionIn
from app.worker.context import WorkerContext
from app.worker.tasks import prune_events
from devtools.simulator import SimulatorServer
from tests.api.conftest import put_registration
from tests.support.worker import worker_context
from tests.worker.conftest import sim_settings

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    return sim_settings(sim_server, database_url, redis_url, change_retention_days=1)


@pytest.fixture
async def worker_ctx(settings: Settings) -> AsyncIterator[WorkerContext]:
    async with worker_context(settings) as ctx:
        yield ctx


async def subscribe(sessions: Sessions, name: str) -> str:
    async with sessions.begin() as session:
        subscription = await service.create(
            session,
            SubscriptionIn(url=f"http://127.0.0.1:9/{name}"),
            allowed_hosts=["127.0.0.1"],
            now=utcnow(),
        )
        return subscription.id


async def deliveries(sessions: Sessions, subscription_id: str) -> list[Delivery]:
    async with sessions() as session:
        result = await session.scalars(
            select(Delivery).where(Delivery.subscription_id == subscription_id)
        )
        return list(result)


async def changes(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(RegistrationChange)) or 0)


def given_up(ctx: WorkerContext) -> float:
    value = ctx["metrics"].registry.get_sample_value(
        "subscription_deliveries_given_up_total", {"reason": "change_pruned"}
    )
    return value or 0.0


async def test_pruning_keeps_what_is_owed_and_gives_up_only_a_disabled_subscriptions(
    sessionmaker: Sessions, worker_ctx: WorkerContext
) -> None:
    enabled = await subscribe(sessionmaker, "enabled")
    disabled = await subscribe(sessionmaker, "disabled")
    for n in range(3):  # three old changes, a delivery of each to both subscriptions (outbox)
        await put_registration(sessionmaker, f"reg-prune-{n}")
    await number_and_publish(sessionmaker, None)
    async with sessionmaker.begin() as session:
        await session.execute(
            update(RegistrationChange).values(recorded_at=utcnow() - timedelta(days=10))
        )
    await put_registration(sessionmaker, "reg-prune-new")  # a recent one, on the feed now
    await number_and_publish(sessionmaker, None)
    async with sessionmaker.begin() as session:  # disabled by a person: its deliveries wait
        await session.execute(
            update(Subscription)
            .where(Subscription.id == disabled)
            .values(enabled=False, disabled_reason="disabled through the API")
        )
    assert len(await deliveries(sessionmaker, enabled)) == 4
    assert await changes(sessionmaker) == 4

    await prune_events(worker_ctx)

    # The enabled subscription's deliveries are all still owed: nothing of theirs was pruned.
    owed = await deliveries(sessionmaker, enabled)
    assert [d.state for d in owed] == [DeliveryState.PENDING.value] * 4
    assert await changes(sessionmaker) == 4
    # The disabled subscription's old ones are given up, saying why, and counted.
    ended = {d.registration_id: d for d in await deliveries(sessionmaker, disabled)}
    for n in range(3):
        assert ended[f"reg-prune-{n}"].state == DeliveryState.FAILED.value
        assert ended[f"reg-prune-{n}"].last_error == GIVEN_UP_PRUNED
    assert ended["reg-prune-new"].state == DeliveryState.PENDING.value
    assert given_up(worker_ctx) == 3

    # Once the enabled subscription got its old deliveries, their changes go (the newest stays).
    async with sessionmaker.begin() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.subscription_id == enabled, Delivery.registration_id != "reg-prune-new")
            .values(state=DeliveryState.SUCCEEDED.value)
        )
    await prune_events(worker_ctx)
    assert await changes(sessionmaker) == 1
    assert [d.registration_id for d in await deliveries(sessionmaker, enabled)] == ["reg-prune-new"]
    assert given_up(worker_ctx) == 3


async def test_the_prune_job_deletes_expired_idempotency_keys_only(
    sessionmaker: Sessions, worker_ctx: WorkerContext
) -> None:
    now = utcnow()
    for key, made in (("old", now - idempotency.IDEMPOTENCY_TTL), ("new", now)):
        held = await idempotency.claim(
            sessionmaker, owner="env:1", key=key, fingerprint="f", now=made
        )
        assert isinstance(held, idempotency.Claim)

    await prune_events(worker_ctx)

    async with sessionmaker() as session:
        kept = (await session.scalars(select(IDEMPOTENCY_KEYS.c.key))).all()
    assert kept == ["new"]
