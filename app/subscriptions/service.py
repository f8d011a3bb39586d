"""What the API's, the console's and the command line's doors do to subscriptions and deliveries.
Runs in the caller's transaction and never commits, except `retry_deliveries` (which owns its one
transaction, since it must wake the dispatchers after the commit)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.actions import Action
from app.audit.repository import Actor, record
from app.changes import outbox
from app.changes.outbox import filter_text, filter_values
from app.changes.signal import publish
from app.core.db import utcnow
from app.core.models import Delivery, DeliveryState, RegistrationChange, Subscription
from app.core.schemas import same_named
from app.subscriptions import repository
from app.subscriptions.rules import check_url, new_secret, redacted_url
from app.subscriptions.schemas import (
    DeliveryOut,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatch,
    SubscriptionWithSecret,
)

ROTATION_OVERLAP: Final = timedelta(hours=24)


_SHOWN_OTHERWISE = ("url", "statuses", "registration_types")


def answer(subscription: Subscription, *, redact: bool = False) -> SubscriptionOut:
    """The subscription as answered; with `redact` (a `read` token's view) its URL's credentials
    and query values hidden (`redacted_url`): they are often a receiver's secret."""
    return SubscriptionOut(
        **same_named(SubscriptionOut, subscription, but=_SHOWN_OTHERWISE),
        url=redacted_url(subscription.url) if redact else subscription.url,
        statuses=filter_values(subscription.status_filter),
        registration_types=filter_values(subscription.type_filter),
    )


def with_secret(subscription: Subscription) -> SubscriptionWithSecret:
    return SubscriptionWithSecret(**answer(subscription).model_dump(), secret=subscription.secret)


def create(
    session: AsyncSession, body: SubscriptionIn, *, allowed_hosts: Sequence[str], now: datetime
) -> Subscription:
    """A new, enabled subscription with a new secret. Raises UrlRefused for a URL not allowed."""
    subscription = Subscription(
        id=repository.new_id(),
        url=check_url(body.url, allowed_hosts),
        description=body.description,
        status_filter=filter_text(body.statuses),
        type_filter=filter_text(body.registration_types),
        enabled=True,
        secret=new_secret(),
        created_at=now,
        updated_at=now,
    )
    repository.add(session, subscription)
    return subscription


def change(
    subscription: Subscription,
    body: SubscriptionPatch,
    *,
    allowed_hosts: Sequence[str],
    now: datetime,
) -> None:
    given = body.model_fields_set
    if "url" in given and body.url is not None:
        subscription.url = check_url(body.url, allowed_hosts)
    if "statuses" in given:
        subscription.status_filter = filter_text(body.statuses)
    if "registration_types" in given:
        subscription.type_filter = filter_text(body.registration_types)
    if "description" in given:
        subscription.description = body.description
    if "enabled" in given and body.enabled is not None:
        subscription.enabled = body.enabled
        subscription.disabled_reason = None if body.enabled else "disabled through the API"
        if body.enabled:
            subscription.failing_since = None
    subscription.updated_at = now


def rotate(subscription: Subscription, *, now: datetime) -> None:
    """A new secret; the current one keeps signing too for `ROTATION_OVERLAP`."""
    subscription.previous_secret = subscription.secret
    subscription.previous_secret_until = now + ROTATION_OVERLAP
    subscription.secret = new_secret()
    subscription.updated_at = now


_DELIVERY_COLUMNS: Final = tuple(
    getattr(Delivery, name) for name in DeliveryOut.model_fields if name != "seq"
)
"""A delivery's columns its answer shows (`seq` is its change's)."""


async def deliveries(
    session: AsyncSession,
    subscription_id: str,
    *,
    before: int | None,
    limit: int,
    state: DeliveryState | None = None,
) -> list[DeliveryOut]:
    """A subscription's deliveries, newest first, before the id `before`, only those in `state`
    when given. The one listing of deliveries: the API, the console and the CLI come here."""
    statement = (
        select(*_DELIVERY_COLUMNS, RegistrationChange.seq)
        .join(RegistrationChange, RegistrationChange.id == Delivery.change_id)
        .where(Delivery.subscription_id == subscription_id)
        .order_by(Delivery.id.desc())
        .limit(limit)
    )
    if before is not None:
        statement = statement.where(Delivery.id < before)
    if state is not None:
        statement = statement.where(Delivery.state == state)
    rows = await session.execute(statement)
    return [DeliveryOut.model_validate(row) for row in rows]


async def retry_deliveries(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    delivery_ids: Sequence[int],
    *,
    actor: Actor,
) -> list[int]:
    """Make each delivery pending and due now (one transaction, with an audit entry by `actor`
    for each), then wake the dispatchers. Answers the ids that name no delivery. The one
    implementation of a retry: the API, the console and the CLI come here."""
    unknown = []
    async with sessionmaker.begin() as session:
        for delivery_id in delivery_ids:
            now = utcnow()
            project_id = await outbox.retry_now(session, delivery_id, now)
            if project_id is None:
                unknown.append(delivery_id)
            else:
                record(
                    session,
                    actor,
                    Action.DELIVERY_RETRY,
                    str(delivery_id),
                    now=now,
                    project_id=project_id,
                )
    await publish(redis)  # wakes the workers' dispatchers
    return unknown
