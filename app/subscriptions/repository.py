"""The one module that writes `subscriptions` and `deliveries` (their creation by the outbox
aside: app/subscriptions/outbox.py). Nothing here commits: callers own the transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.db import rowcount
from app.models import (
    DELIVERIES,
    SUBSCRIPTIONS,
    Delivery,
    DeliveryState,
    RegistrationChange,
    Subscription,
)


def new_id() -> str:
    return "sub_" + uuid.uuid4().hex


async def get(session: AsyncSession, subscription_id: str) -> Subscription | None:
    return await session.get(Subscription, subscription_id, populate_existing=True)


def add(session: AsyncSession, subscription: Subscription) -> None:
    session.add(subscription)


async def delete(session: AsyncSession, subscription: Subscription) -> None:
    await session.delete(subscription)


async def fail_pending(session: AsyncSession, subscription_id: str, why: str, now: datetime) -> int:
    """End every pending delivery of a subscription that will not be sent (it was disabled)."""
    result = await session.execute(
        update(DELIVERIES)
        .where(
            DELIVERIES.c.subscription_id == subscription_id,
            DELIVERIES.c.state == DeliveryState.PENDING.value,
        )
        .values(state=DeliveryState.FAILED.value, last_error=why, updated_at=now)
    )
    return rowcount(result)


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: int
    subscription_id: str


async def lease_due(
    session: AsyncSession,
    *,
    now: datetime,
    lease_until: datetime,
    per_subscription: int,
    limit: int,
) -> list[DueDelivery]:
    """Lease the deliveries to send now, so that no other dispatcher hands them out meanwhile:
    pending, due, of an enabled subscription, whose change is numbered, with no earlier pending
    delivery of the same subscription and registration (in order), and not leased already; at
    most `per_subscription` leased per subscription at a time (a slow receiver holds only that
    many jobs). Lock-free readers race on the lease: the UPDATE's condition decides."""
    earlier = aliased(Delivery)
    leased_now = aliased(Delivery)
    busy = (
        select(func.count())
        .select_from(leased_now)
        .where(
            leased_now.subscription_id == Delivery.subscription_id,
            leased_now.state == DeliveryState.PENDING.value,
            leased_now.leased_until > now,
        )
        .scalar_subquery()
    )
    candidates = (
        select(Delivery.id, Delivery.subscription_id)
        .join(RegistrationChange, RegistrationChange.id == Delivery.change_id)
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .where(
            Delivery.state == DeliveryState.PENDING.value,
            Delivery.next_attempt_at <= now,
            or_(Delivery.leased_until.is_(None), Delivery.leased_until <= now),
            Subscription.enabled.is_(True),
            RegistrationChange.seq.is_not(None),
            ~exists().where(
                earlier.subscription_id == Delivery.subscription_id,
                earlier.registration_id == Delivery.registration_id,
                earlier.change_id < Delivery.change_id,
                earlier.state == DeliveryState.PENDING.value,
            ),
            busy < per_subscription,
        )
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    )
    rows = (await session.execute(candidates)).all()
    taken: list[DueDelivery] = []
    counts: dict[str, int] = {}
    for delivery_id, subscription_id in rows:
        if counts.get(subscription_id, 0) >= per_subscription:
            continue
        result = await session.execute(
            update(DELIVERIES)
            .where(
                DELIVERIES.c.id == delivery_id,
                DELIVERIES.c.state == DeliveryState.PENDING.value,
                or_(DELIVERIES.c.leased_until.is_(None), DELIVERIES.c.leased_until <= now),
            )
            .values(leased_until=lease_until)
        )
        if rowcount(result):
            counts[subscription_id] = counts.get(subscription_id, 0) + 1
            taken.append(DueDelivery(delivery_id, subscription_id))
    return taken


async def load(
    session: AsyncSession, delivery_id: int
) -> tuple[Delivery, Subscription, RegistrationChange] | None:
    row = (
        await session.execute(
            select(Delivery, Subscription, RegistrationChange)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .join(RegistrationChange, RegistrationChange.id == Delivery.change_id)
            .where(Delivery.id == delivery_id)
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2])


async def record_attempt(
    session: AsyncSession,
    delivery_id: int,
    *,
    state: DeliveryState,
    status_code: int | None,
    error: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    """The outcome of one attempt; the lease ends with it."""
    await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == delivery_id)
        .values(
            state=state.value,
            attempts=DELIVERIES.c.attempts + 1,
            last_status_code=status_code,
            last_error=error,
            next_attempt_at=next_attempt_at,
            leased_until=None,
            updated_at=now,
        )
    )


async def retry_now(session: AsyncSession, delivery_id: int, now: datetime) -> bool:
    """Make a delivery pending and due now (a person asked). False if there is no such one."""
    result = await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == delivery_id)
        .values(
            state=DeliveryState.PENDING.value,
            next_attempt_at=now,
            leased_until=None,
            updated_at=now,
        )
    )
    return rowcount(result) > 0


async def oldest_pending(session: AsyncSession) -> dict[str, datetime]:
    """Per subscription, when its oldest pending delivery was written."""
    rows = await session.execute(
        select(Delivery.subscription_id, func.min(Delivery.created_at))
        .where(Delivery.state == DeliveryState.PENDING.value)
        .group_by(Delivery.subscription_id)
    )
    return {subscription_id: at for subscription_id, at in rows}


async def disable(session: AsyncSession, subscription_id: str, why: str, now: datetime) -> None:
    """Disable a subscription and end its pending deliveries (they will not be sent)."""
    await session.execute(
        update(SUBSCRIPTIONS)
        .where(SUBSCRIPTIONS.c.id == subscription_id)
        .values(enabled=False, disabled_reason=why, updated_at=now)
    )
    await fail_pending(session, subscription_id, f"not sent: {why}", now)


async def note_failure(session: AsyncSession, subscription_id: str, now: datetime) -> datetime:
    """Answers since when every attempt to this subscription has failed."""
    await session.execute(
        update(SUBSCRIPTIONS)
        .where(SUBSCRIPTIONS.c.id == subscription_id, SUBSCRIPTIONS.c.failing_since.is_(None))
        .values(failing_since=now)
    )
    since = await session.scalar(
        select(SUBSCRIPTIONS.c.failing_since).where(SUBSCRIPTIONS.c.id == subscription_id)
    )
    return since or now


async def note_success(session: AsyncSession, subscription_id: str) -> None:
    await session.execute(
        update(SUBSCRIPTIONS)
        .where(SUBSCRIPTIONS.c.id == subscription_id, SUBSCRIPTIONS.c.failing_since.is_not(None))
        .values(failing_since=None)
    )


async def every(session: AsyncSession) -> list[Subscription]:
    result = await session.execute(select(Subscription).order_by(Subscription.created_at))
    return list(result.scalars())
