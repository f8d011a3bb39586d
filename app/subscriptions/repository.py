"""The one module that writes `subscriptions`, `deliveries` (their creation by the outbox
aside: app/changes/outbox.py) and `delivery_attempts`. Nothing here commits: callers own the
transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy
from sqlalchemy import bindparam, case, exists, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.core.db import rowcount
from app.core.models import (
    DELIVERIES,
    DELIVERY_ATTEMPTS,
    REGISTRATION_CHANGES,
    SUBSCRIPTIONS,
    Delivery,
    DeliveryState,
    RegistrationChange,
    Subscription,
)
from app.subscriptions.delivery import Attempt

# `'pending'` written into the statement, not bound: the partial indexes of the pending deliveries
# (`WHERE state = 'pending'`) serve only a query whose plan knows the value. Bound, PostgreSQL's
# generic plan (chosen for a prepared statement after five runs) cannot use them and walked every
# delivery of the subscription: 35 ms at 2k pending instead of 0.4.
PENDING = literal(DeliveryState.PENDING.value, literal_execute=True)


def new_id() -> str:
    return "sub_" + uuid.uuid4().hex


async def get(session: AsyncSession, subscription_id: str) -> Subscription | None:
    return await session.get(Subscription, subscription_id, populate_existing=True)


def add(session: AsyncSession, subscription: Subscription) -> None:
    session.add(subscription)


async def delete(session: AsyncSession, subscription: Subscription) -> None:
    await session.delete(subscription)


_SUBSCRIPTION = select(Subscription).where(Subscription.id == bindparam("subscription_id"))
# FOR NO KEY UPDATE (key_share): FOR UPDATE would also conflict with the KEY SHARE lock that the
# outbox's foreign key check takes on this row for every delivery it inserts, so a sending job and
# the transactions recording changes would queue behind each other.
_LOCKED_SUBSCRIPTION = _SUBSCRIPTION.with_for_update(key_share=True)


async def for_sending(
    session: AsyncSession, subscription_id: str, *, lock: bool
) -> Subscription | None:
    """The subscription as it stands (None if deleted); with `lock`, its row held until the
    transaction ends.

    Every transaction that writes a delivery's outcome locks FIRST, before any delivery row: one
    order for all, so jobs of one subscription never deadlock (one disabling it updates every
    pending delivery, while another writes its own)."""
    statement = _LOCKED_SUBSCRIPTION if lock else _SUBSCRIPTION
    result = await session.execute(
        statement,
        {"subscription_id": subscription_id},
        execution_options={"populate_existing": True},
    )
    return result.scalar_one_or_none()


def _failed_with(why: str) -> dict[str, Any]:
    """The values that end a pending delivery `failed`: the last error of one already tried is
    kept, `why` added to it."""
    return {
        "state": DeliveryState.FAILED.value,
        "last_error": case(
            (DELIVERIES.c.last_error.is_(None), why),
            else_=DELIVERIES.c.last_error + "; " + why,
        ),
    }


async def fail_pending(session: AsyncSession, subscription_id: str, why: str, now: datetime) -> int:
    """End every pending delivery of a subscription that will not be sent (it was disabled);
    the last error of one already tried is kept, `why` added to it."""
    result = await session.execute(
        update(DELIVERIES)
        .where(
            DELIVERIES.c.subscription_id == subscription_id,
            DELIVERIES.c.state == PENDING,
        )
        .values(**_failed_with(why), updated_at=now)
    )
    return rowcount(result)


GIVEN_UP_PRUNED = (
    "given up: not sent before its change left the feed (CHANGE_RETENTION_DAYS) while the "
    "subscription was disabled"
)


async def give_up_unsent(session: AsyncSession, *, through_seq: Any, now: datetime) -> int:
    """Mark `failed` (with `GIVEN_UP_PRUNED`) the pending deliveries of DISABLED subscriptions
    whose change is numbered `through_seq` or lower: the changes pruning is about to delete
    (app.changes.repository.pruned_through). An enabled subscription's pending deliveries are
    left alone: pruning stops below them. Answers how many were given up."""
    result = await session.execute(
        update(DELIVERIES)
        .where(
            DELIVERIES.c.state == PENDING,
            DELIVERIES.c.subscription_id.in_(
                select(SUBSCRIPTIONS.c.id).where(SUBSCRIPTIONS.c.enabled.is_(False))
            ),
            DELIVERIES.c.change_id.in_(
                select(REGISTRATION_CHANGES.c.id).where(REGISTRATION_CHANGES.c.seq <= through_seq)
            ),
        )
        .values(**_failed_with(GIVEN_UP_PRUNED), next_attempt_at=None, updated_at=now)
    )
    return rowcount(result)


async def subscriptions_due(session: AsyncSession, now: datetime) -> list[str]:
    """Enabled subscriptions with a delivery due now (one index probe each)."""
    due = exists().where(
        Delivery.subscription_id == Subscription.id,
        Delivery.state == PENDING,
        Delivery.next_attempt_at <= now,
    )
    result = await session.execute(
        select(Subscription.id).where(Subscription.enabled.is_(True), due)
    )
    return list(result.scalars())


async def next_due(session: AsyncSession, now: datetime) -> datetime | None:
    """When the next delivery waiting for a retry comes due (of an enabled subscription); None
    when none waits."""
    result = await session.execute(
        select(func.min(Delivery.next_attempt_at))
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .where(
            Delivery.state == PENDING,
            Delivery.next_attempt_at > now,
            Subscription.enabled.is_(True),
        )
    )
    return result.scalar_one_or_none()


# The deliveries to send, built once: building this statement (an aliased, correlated subquery)
# cost more CPU than running it, once per sending cycle.
_earlier = aliased(Delivery)
_HEAD = (
    select(func.min(_earlier.change_id))
    .where(
        _earlier.subscription_id == Delivery.subscription_id,
        _earlier.registration_id == Delivery.registration_id,
        _earlier.state == PENDING,
    )
    .correlate(Delivery)
    .scalar_subquery()
)
_DUE = (
    select(Delivery, RegistrationChange)
    .join(RegistrationChange, RegistrationChange.id == Delivery.change_id)
    .where(
        Delivery.subscription_id == bindparam("subscription_id"),
        Delivery.state == PENDING,
        Delivery.next_attempt_at <= bindparam("now", type_=DELIVERIES.c.next_attempt_at.type),
        RegistrationChange.seq.is_not(None),
        Delivery.id.not_in(bindparam("flying", expanding=True)),
        Delivery.change_id == _HEAD,
    )
    .order_by(Delivery.change_id)
    .limit(bindparam("limit"))
)


async def due(
    session: AsyncSession,
    subscription_id: str,
    *,
    now: datetime,
    limit: int,
    flying: Collection[int] = (),
) -> list[tuple[Delivery, RegistrationChange]]:
    """The subscription's deliveries to send now, in order: pending, due, their change numbered,
    and each the earliest pending delivery of its registration (so a batch holds at most one per
    registration, and a later change never overtakes an earlier one); not those in `flying`
    (being sent).

    Cost: a walk of the partial index of the subscription's pending deliveries in change order,
    and for each one walked an index probe for its registration's earliest pending change. The
    probe is a correlated `min()` on purpose: as an anti-join (NOT EXISTS) PostgreSQL planned it,
    with the pending set's statistics stale (they change by the second), as a scan of every
    pending delivery of the subscription per row: 90 ms at 16k pending instead of 1."""
    result = await session.execute(
        _DUE,
        {"subscription_id": subscription_id, "now": now, "limit": limit, "flying": list(flying)},
    )
    return [(delivery, change) for delivery, change in result.all()]


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
    """The outcome of one attempt."""
    await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == delivery_id)
        .values(
            state=state.value,
            attempts=DELIVERIES.c.attempts + 1,
            last_status_code=status_code,
            last_error=error,
            next_attempt_at=next_attempt_at,
            updated_at=now,
        )
    )


_SUCCEEDED = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        state=DeliveryState.SUCCEEDED.value,
        attempts=DELIVERIES.c.attempts + 1,
        last_status_code=bindparam("status_code", type_=DELIVERIES.c.last_status_code.type),
        last_error=None,
        next_attempt_at=None,
        updated_at=bindparam("now", type_=DELIVERIES.c.updated_at.type),
    )
)


async def record_successes(
    session: AsyncSession, delivery_ids: Collection[int], status_code: int, now: datetime
) -> None:
    """Attempts that succeeded with `status_code`: one statement for all of them."""
    await session.execute(
        _SUCCEEDED, {"ids": list(delivery_ids), "status_code": status_code, "now": now}
    )


def attempt_row(subscription_id: str, delivery_id: int, attempt: Attempt) -> dict[str, Any]:
    """The attempts log's row of one attempt (`log_attempts`)."""
    return {
        "delivery_id": delivery_id,
        "subscription_id": subscription_id,
        "attempted_at": attempt.at,
        "succeeded": attempt.succeeded,
        "request_headers": attempt.request_headers,
        "response_status": attempt.status_code,
        "response_body": attempt.response_body,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
    }


_LOG_ATTEMPTS = insert(DELIVERY_ATTEMPTS)


async def log_attempts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Keep attempts (`attempt_row`) in the attempts log: one statement for all of them (an
    INSERT of many rows), so that the sending cycle pays one round trip, not one per POST."""
    if rows:
        await session.execute(_LOG_ATTEMPTS, list(rows))


async def prune_attempts(session: AsyncSession, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` attempts made before `before`, oldest first (the prune cron). Walks the
    primary key from its start: ids grow with time, so the old rows come first and no index on
    the time is needed."""
    oldest = (
        select(DELIVERY_ATTEMPTS.c.id)
        .where(DELIVERY_ATTEMPTS.c.attempted_at < before)
        .order_by(DELIVERY_ATTEMPTS.c.id)
        .limit(limit)
    )
    result = await session.execute(
        sqlalchemy.delete(DELIVERY_ATTEMPTS).where(
            DELIVERY_ATTEMPTS.c.id.in_(oldest.scalar_subquery())
        )
    )
    return rowcount(result)


async def retry_now(session: AsyncSession, delivery_id: int, now: datetime) -> bool:
    """Make a delivery pending and due now (a person asked). False if there is no such one."""
    result = await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == delivery_id)
        .values(
            state=DeliveryState.PENDING.value,
            next_attempt_at=now,
            updated_at=now,
        )
    )
    return rowcount(result) > 0


def _failed_since(subscription_id: str, since: datetime, *, by_outcome: bool) -> list[Any]:
    """Failed deliveries of a subscription written at or after `since` (`by_outcome`: marked
    failed at or after it)."""
    at = DELIVERIES.c.updated_at if by_outcome else DELIVERIES.c.created_at
    return [
        DELIVERIES.c.subscription_id == subscription_id,
        DELIVERIES.c.state == DeliveryState.FAILED.value,
        at >= since,
    ]


async def count_failed(
    session: AsyncSession, subscription_id: str, since: datetime, *, by_outcome: bool = False
) -> int:
    """How many deliveries `retry_failed` would make pending."""
    found = await session.scalar(
        select(func.count())
        .select_from(DELIVERIES)
        .where(*_failed_since(subscription_id, since, by_outcome=by_outcome))
    )
    return found or 0


async def retry_failed(
    session: AsyncSession,
    subscription_id: str,
    since: datetime,
    now: datetime,
    *,
    by_outcome: bool = False,
) -> int:
    """Make every failed delivery of a subscription written at or after `since` (`by_outcome`:
    marked failed at or after it) pending and due now; answers how many. Their order holds:
    `due` sends a registration's earliest pending change first."""
    result = await session.execute(
        update(DELIVERIES)
        .where(*_failed_since(subscription_id, since, by_outcome=by_outcome))
        .values(state=DeliveryState.PENDING.value, next_attempt_at=now, updated_at=now)
    )
    return rowcount(result)


async def earlier_pending(session: AsyncSession, delivery: Delivery) -> Delivery | None:
    """The earliest pending delivery of the same subscription and registration before `delivery`
    (a lower change): while there is one, `delivery` is not sent (`due` keeps their order)."""
    result = await session.execute(
        select(Delivery)
        .where(
            Delivery.subscription_id == delivery.subscription_id,
            Delivery.registration_id == delivery.registration_id,
            Delivery.state == PENDING,
            Delivery.change_id < delivery.change_id,
        )
        .order_by(Delivery.change_id)
        .limit(1)
    )
    return result.scalar_one_or_none()


async def oldest_pending(session: AsyncSession) -> dict[str, datetime]:
    """Per subscription, when its oldest pending delivery was written."""
    rows = await session.execute(
        select(Delivery.subscription_id, func.min(Delivery.created_at))
        .where(Delivery.state == PENDING)
        .group_by(Delivery.subscription_id)
    )
    return {subscription_id: at for subscription_id, at in rows}


async def disable(session: AsyncSession, subscription_id: str, why: str, now: datetime) -> None:
    """Disable a subscription and end its pending deliveries (they will not be sent)."""
    await session.execute(
        update(SUBSCRIPTIONS)
        .where(SUBSCRIPTIONS.c.id == subscription_id)
        .values(enabled=False, disabled_reason=why, disabled_at=now, updated_at=now)
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
