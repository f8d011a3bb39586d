"""The one module that writes `subscriptions`, and the deliveries' reads (every write to
`deliveries` is app/changes/outbox.py's). Nothing here commits: callers own the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    all_,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.changes import outbox
from app.changes.outbox import PENDING
from app.core.db import DriverStatement
from app.core.models import (
    DELIVERIES,
    REGISTRATION_CHANGES,
    SUBSCRIPTIONS,
    Delivery,
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


_SUBSCRIPTION = select(Subscription).where(Subscription.id == bindparam("subscription_id"))
# FOR NO KEY UPDATE (key_share): FOR UPDATE would also conflict with the KEY SHARE lock that the
# outbox's foreign key check takes on this row for every delivery it inserts, so a sending job and
# the numbering of changes would queue behind each other.
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


def dispatch_statement(now: datetime, sending: Sequence[str]) -> Select[list[str] | None, int]:
    """`to_dispatch`'s query, one row: the enabled subscriptions with a delivery due (one probe of
    the pending deliveries' partial index (subscription, next attempt) each), and how many enabled
    ones are not in `sending`."""
    due = exists().where(
        Delivery.subscription_id == Subscription.id,
        Delivery.state == PENDING,
        Delivery.next_attempt_at <= now,
    )
    enabled = (
        select(Subscription.id, due.label("due"))
        .where(Subscription.enabled.is_(True))
        .subquery("enabled")
    )
    return select(
        func.array_agg(enabled.c.id).filter(enabled.c.due),
        func.count().filter(enabled.c.id.not_in(sending)),
    )


@dataclass(frozen=True, slots=True)
class Dispatch:
    due: list[str]
    """Enabled subscriptions with a delivery due now."""
    unattended: int
    """Enabled subscriptions without a job of the asking process sending them."""


async def to_dispatch(session: AsyncSession, now: datetime, sending: Sequence[str]) -> Dispatch:
    """What the dispatcher of a process whose jobs are sending `sending` needs: the enabled
    subscriptions with a delivery due now, and how many enabled ones have no job of it. One row,
    whatever the number of subscriptions."""
    due, unattended = (await session.execute(dispatch_statement(now, sending))).one()
    return Dispatch(list(due or []), int(unattended))


def next_due_statement(now: datetime) -> Select[datetime | None]:
    """`next_due`'s query: one probe per enabled subscription of its pending deliveries' index
    (subscription, next attempt), as `to_dispatch`; no index of every pending delivery by
    next attempt is kept (each delivery written would write it too, and it gave the window of
    `due` a plan that read the whole backlog: migration 0019)."""
    upcoming = (
        select(Delivery.next_attempt_at.label("at"))
        .where(
            Delivery.subscription_id == Subscription.id,
            Delivery.state == PENDING,
            Delivery.next_attempt_at > now,
        )
        .order_by(Delivery.next_attempt_at)
        .limit(1)
        .lateral("upcoming")
    )
    return (
        select(func.min(upcoming.c.at))
        .select_from(Subscription)
        .join(upcoming, true())
        .where(Subscription.enabled.is_(True))
    )


async def next_due(session: AsyncSession, now: datetime) -> datetime | None:
    """When the next delivery waiting for a retry comes due (of an enabled subscription); None
    when none waits."""
    result = await session.execute(next_due_statement(now))
    return result.scalar_one_or_none()


WINDOW: Final = 128
"""How many of a subscription's pending deliveries, the first in change order, `due` looks at
before it looks at them all."""


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery to send now (`due`): what its sending needs, and its change's row."""

    id: int
    registration_id: str
    attempts: int
    created_at: datetime
    change_id: int
    change_row: Any
    """The change's columns as read (`change`)."""

    def change(self) -> RegistrationChange:
        """The change, built from its row (not attached to any session)."""
        return RegistrationChange(**{name: self.change_row[name] for name in _CHANGE_NAMES})


_CHANGE_NAMES = tuple(column.key for column in REGISTRATION_CHANGES.c)


def _due_among(source: Any) -> Select[*tuple[Any, ...]]:
    """`due`'s query over `source`: the deliveries table's entity, or an alias of a part of it."""
    earlier = aliased(Delivery)
    head = (
        select(func.min(earlier.change_id))
        .where(
            earlier.subscription_id == source.subscription_id,
            earlier.registration_id == source.registration_id,
            earlier.state == PENDING,
        )
        .correlate(source)
        .scalar_subquery()
    )
    return (
        select(
            source.id.label("delivery_id"),
            source.attempts.label("delivery_attempts"),
            source.created_at.label("delivery_created_at"),
            *REGISTRATION_CHANGES.c,
        )
        .select_from(source)
        .join(REGISTRATION_CHANGES, REGISTRATION_CHANGES.c.id == source.change_id)
        .where(
            source.subscription_id == bindparam("subscription_id"),
            source.state == PENDING,
            source.next_attempt_at <= bindparam("now", type_=DELIVERIES.c.next_attempt_at.type),
            REGISTRATION_CHANGES.c.seq.is_not(None),
            # One array, not an IN list: one statement text for any number in flight, prepared
            # once per connection.
            source.id != all_(bindparam("flying", type_=ARRAY(BigInteger()))),
            source.change_id == head,
        )
        .order_by(_in_change_order(source.change_id))
        .limit(bindparam("limit", type_=Integer()))
    )


def _in_change_order(change_id: Any) -> Any:
    """`change_id + 0`: the change order, as an expression no index gives. Over the window it is
    a sort of at most `WINDOW` rows either way; over the whole table (`DUE`, the fallback) it keeps
    PostgreSQL from walking the changes' primary key in order and probing each change's
    deliveries, skipping the delivered ones (as a kept plan walked the b-tree of every delivery's
    change: 26-44 ms at 51k deliveries, migration 0019): it reads the subscription's pending
    deliveries from their own indexes and sorts them."""
    return change_id + literal_column("0")


# The deliveries to send, built once: building these statements (an aliased, correlated subquery)
# cost more CPU than running them, once per sending cycle.
DUE = _due_among(Delivery)
_FIRST_PENDING = (
    select(Delivery)
    .where(Delivery.subscription_id == bindparam("subscription_id"), Delivery.state == PENDING)
    .order_by(Delivery.change_id)
    .limit(WINDOW)
    .cte("first_pending")
)
_DUE_IN_WINDOW = _due_among(aliased(Delivery, _FIRST_PENDING)).cte("due_in_window")
_EXAMINED = select(func.count().label("examined")).select_from(_FIRST_PENDING).subquery()
DUE_AMONG_FIRST = (
    # One row at least, which says how many pending deliveries the window held: when it found
    # nothing to send, `due` needs to know whether the window saw them all.
    select(_EXAMINED.c.examined, _DUE_IN_WINDOW)
    .select_from(_EXAMINED.outerjoin(_DUE_IN_WINDOW, true()))
    .order_by(_DUE_IN_WINDOW.c.id)  # the change's id: the rows carry the change's columns
)
# Sent by the sender on every cycle: compiled for asyncpg once, the rows read as they come
# (turning each into ORM objects cost more CPU than the read).
_DUE = DriverStatement(DUE)
_DUE_AMONG_FIRST = DriverStatement(DUE_AMONG_FIRST)


async def due(
    driver: Any,
    subscription_id: str,
    *,
    now: datetime,
    limit: int,
    flying: Collection[int] = (),
) -> list[Due]:
    """The subscription's deliveries to send now, in order: pending, due, their change numbered,
    and each the earliest pending delivery of its registration (so a batch holds at most one per
    registration, and a later change never overtakes an earlier one); not those in `flying`
    (being sent). `driver`: the asyncpg connection of the caller's transaction.

    Cost: it first looks only at the first `WINDOW` pending deliveries in change order, and at
    all of them only when those hold fewer than `limit` to send and there may be more.
    Looking at all costs an index probe per pending delivery (its registration's earliest
    pending change), whatever the plan: when a subscriber fell behind, PostgreSQL (misjudging
    how many of the pending are due) read and probed every one of them, then sorted, for each
    cycle: 9 ms at 900 pending, so the slower the reads, the longer the backlog. The window
    bounds that to `WINDOW` probes while the front of the backlog is sendable; a front blocked
    by retries costs what it did before.

    The probe is a correlated `min()` on purpose: as an anti-join (NOT EXISTS) PostgreSQL
    planned it, with the pending set's statistics stale (they change by the second), as a scan
    of every pending delivery of the subscription per row: 90 ms at 16k pending instead of 1."""
    parameters = {
        "subscription_id": subscription_id,
        "now": now,
        "limit": limit,
        "flying": list(flying),
    }
    window = await _DUE_AMONG_FIRST.fetch(driver, parameters)
    rows = [row for row in window if row["delivery_id"] is not None]
    if len(rows) < limit and window[0]["examined"] == WINDOW:
        rows = await _DUE.fetch(driver, parameters)
    return [
        Due(
            id=row["delivery_id"],
            registration_id=row["registration_id"],
            attempts=row["delivery_attempts"],
            created_at=row["delivery_created_at"],
            change_id=row["id"],
            change_row=row,
        )
        for row in rows
    ]


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
    await outbox.fail_pending(session, subscription_id, f"not sent: {why}", now)


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
