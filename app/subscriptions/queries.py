"""Read-side SQL of the attempts log (`/v1/subscriptions/{id}/attempts`,
`/v1/deliveries/{id}/attempts`, the console). Never writes.

Newest first by `attempted_at`, then id, keyset-paginated (`<time>:<id>` cursors): a
subscription's walk is its index `(subscription_id, attempted_at, id)`, its failures alone the
partial index of failed attempts (migration 0012). Each page joins its rows to their delivery and
change for `seq` and the payload (the change's body, not kept per attempt): one probe each.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.filtering import where_given
from app.core.models import Delivery, DeliveryAttempt, RegistrationChange, Subscription
from app.core.schemas import same_named
from app.subscriptions.delivery import body_of
from app.subscriptions.rules import cause, failing
from app.subscriptions.schemas import AttemptOut, AttemptOutcome, HealthOut, HourOut, LatencyOut

MAX_ROW_ID = 2**63 - 1


class AttemptKey(BaseModel):
    """Where a listing of attempts stopped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: AwareDatetime
    id: int = Field(ge=1, le=MAX_ROW_ID)


def key_of(attempt: AttemptOut) -> AttemptKey:
    return AttemptKey(at=attempt.attempted_at, id=attempt.id)


@dataclass(frozen=True, slots=True)
class AttemptFilters:
    subscription_id: str | None = None
    delivery_id: int | None = None
    outcome: AttemptOutcome | None = None
    since: datetime | None = None
    """Only attempts made at or after it."""


async def attempts(
    session: AsyncSession,
    filters: AttemptFilters,
    *,
    limit: int,
    before: AttemptKey | None = None,
) -> list[AttemptOut]:
    """Attempts matching `filters`, newest first, after `before` in that order, at most `limit`."""
    statement: Select[DeliveryAttempt, RegistrationChange] = (
        select(DeliveryAttempt, RegistrationChange)
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .join(RegistrationChange, RegistrationChange.id == Delivery.change_id)
    )
    statement = where_given(
        statement,
        (DeliveryAttempt.subscription_id, filters.subscription_id),
        (DeliveryAttempt.delivery_id, filters.delivery_id),
    )
    if filters.outcome is not None:
        statement = statement.where(
            DeliveryAttempt.succeeded.is_(filters.outcome is AttemptOutcome.SUCCEEDED)
        )
    if filters.since is not None:
        statement = statement.where(DeliveryAttempt.attempted_at >= filters.since)
    if before is not None:
        statement = statement.where(
            tuple_(DeliveryAttempt.attempted_at, DeliveryAttempt.id) < (before.at, before.id)
        )
    statement = statement.order_by(
        DeliveryAttempt.attempted_at.desc(), DeliveryAttempt.id.desc()
    ).limit(limit)
    rows = await session.execute(statement)
    return [_answer(attempt, change) for attempt, change in rows.all()]


def _answer(attempt: DeliveryAttempt, change: RegistrationChange) -> AttemptOut:
    """The attempt as kept, with its change's place in the feed and the body it sent."""
    return AttemptOut(
        **same_named(AttemptOut, attempt, but=("seq", "payload")),
        seq=change.seq,
        payload=json.loads(body_of(change)),
    )


HEALTH_WINDOW = timedelta(hours=24)


async def health(
    session: AsyncSession, subscription: Subscription, *, now: datetime, alert_after: timedelta
) -> HealthOut:
    """The subscription's health over `HEALTH_WINDOW` before `now`: three aggregates of its
    attempts in that window (one index range each: `(subscription_id, attempted_at, id)`)."""
    since = now - HEALTH_WINDOW
    window = (
        DeliveryAttempt.subscription_id == subscription.id,
        DeliveryAttempt.attempted_at >= since,
    )
    answered = DeliveryAttempt.response_status.is_not(None)
    totals = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(DeliveryAttempt.succeeded),
                func.percentile_cont(0.5).within_group(DeliveryAttempt.latency_ms).filter(answered),
                func.percentile_cont(0.95)
                .within_group(DeliveryAttempt.latency_ms)
                .filter(answered),
            ).where(*window)
        )
    ).one()
    attempts, succeeded, p50, p95 = totals
    causes: Counter[str] = Counter()
    failures = await session.execute(
        select(DeliveryAttempt.response_status, DeliveryAttempt.error, func.count())
        .where(*window, DeliveryAttempt.succeeded.is_(False))
        .group_by(DeliveryAttempt.response_status, DeliveryAttempt.error)
    )
    for status, error, count in failures.all():
        causes[cause(status, error)] += count
    hour = func.date_trunc("hour", DeliveryAttempt.attempted_at)
    hours = await session.execute(
        select(hour, func.count().filter(DeliveryAttempt.succeeded), func.count())
        .where(*window)
        .group_by(hour)
        .order_by(hour)
    )
    return HealthOut(
        since=since,
        attempts=attempts,
        succeeded=succeeded,
        success_rate=succeeded / attempts if attempts else None,
        latency_ms=LatencyOut(p50=p50, p95=p95),
        failures_by_cause=dict(causes),
        failing_since=subscription.failing_since,
        failing=failing(subscription.enabled, subscription.failing_since, now, alert_after),
        hourly=[HourOut(hour=at, succeeded=ok, failed=all_ - ok) for at, ok, all_ in hours.all()],
    )
