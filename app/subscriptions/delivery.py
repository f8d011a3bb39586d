"""Sending one delivery: POST the change, signed (Standard Webhooks), and record what came of it.

No transaction is open during the POST: the delivery is read, sent, then its outcome written. A
delivery is leased to one job at a time (repository.lease_due); a job that dies mid-way leaves the
lease to expire and the delivery is sent again: at least once, never lost. Receivers deduplicate
by `webhook-id`, which is the same on every attempt.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.schemas import ChangeOut
from app.db import utcnow
from app.models import DeliveryState, RegistrationChange
from app.settings import Settings
from app.subscriptions import repository
from app.subscriptions.rules import next_attempt, signature

log = logging.getLogger(__name__)

EVENT_TYPE = "registration.changed"
USER_AGENT = "sinch-registrations-webhooks/1"


def message_id(delivery_id: int) -> str:
    return f"msg_{delivery_id}"


def body_of(change: RegistrationChange) -> str:
    """The delivery's body: `{"type", "timestamp", "data": <change item>}` as JSON."""
    item = ChangeOut.of(change)
    data = item.model_dump_json(by_alias=True)
    stamp = item.recorded_at.isoformat()
    return f'{{"type":"{EVENT_TYPE}","timestamp":"{stamp}","data":{data}}}'


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """A `Retry-After` header (seconds, or an HTTP date) as seconds from `now`; None if absent or
    unreadable."""
    if not header:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds()) if when.tzinfo else None


@dataclass(frozen=True, slots=True)
class Attempt:
    status_code: int | None
    error: str | None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def post(
    http: httpx.AsyncClient,
    url: str,
    secrets: list[str],
    delivery_id: int,
    body: str,
    *,
    seconds: float,
) -> Attempt:
    """One POST. Redirects are not followed (a 3xx is a failure): the URL checked at creation is
    the only place the service calls. Errors name their kind, never the URL (it may carry a
    token in its query)."""
    at = utcnow()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id(delivery_id),
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature(secrets, message_id(delivery_id), at, body),
    }
    try:
        response = await http.post(
            url, content=body.encode(), headers=headers, timeout=seconds, follow_redirects=False
        )
    except httpx.TimeoutException:
        return Attempt(None, f"no answer within {seconds:g} s")
    except httpx.HTTPError as exc:
        return Attempt(None, f"could not deliver ({type(exc).__name__})")
    if 200 <= response.status_code < 300:
        return Attempt(response.status_code, None)
    return Attempt(
        response.status_code,
        f"answered {response.status_code}",
        retry_after_seconds(response.headers.get("retry-after"), utcnow()),
    )


async def deliver(
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    settings: Settings,
    delivery_id: int,
    *,
    rng: random.Random | None = None,
) -> tuple[str, str | None]:
    """Send delivery `delivery_id` once and record the outcome. Answers it (`succeeded`,
    `retrying`, `failed`, `disabled`, or why nothing was sent) and the subscription's id."""
    async with sessions() as session:
        loaded = await repository.load(session, delivery_id)
    if loaded is None:
        return "missing", None
    delivery, subscription, change = loaded
    if delivery.state != DeliveryState.PENDING:
        return "already_done", subscription.id
    if not subscription.enabled:
        return "subscription_disabled", subscription.id
    now = utcnow()
    secrets = [subscription.secret]
    if subscription.previous_secret and (subscription.previous_secret_until or now) > now:
        secrets.append(subscription.previous_secret)
    attempt = await post(
        http,
        subscription.url,
        secrets,
        delivery.id,
        body_of(change),
        seconds=settings.delivery_timeout_seconds,
    )
    now = utcnow()
    async with sessions.begin() as session:
        if attempt.succeeded:
            await repository.record_attempt(
                session,
                delivery.id,
                state=DeliveryState.SUCCEEDED,
                status_code=attempt.status_code,
                error=None,
                next_attempt_at=None,
                now=now,
            )
            await repository.note_success(session, subscription.id)
            return "succeeded", subscription.id
        if attempt.status_code == 410:
            await repository.record_attempt(
                session,
                delivery.id,
                state=DeliveryState.FAILED,
                status_code=410,
                error="answered 410 Gone: the subscription is disabled",
                next_attempt_at=None,
                now=now,
            )
            await repository.disable(session, subscription.id, "the receiver answered 410", now)
            log.warning(
                "subscription disabled: its receiver answered 410",
                extra={"subscription_id": subscription.id},
            )
            return "disabled", subscription.id
        retry_at = next_attempt(
            attempts=delivery.attempts + 1,
            created_at=delivery.created_at,
            now=now,
            pauses=settings.delivery_retry_seconds,
            give_up_after=timedelta(hours=settings.delivery_give_up_hours),
            retry_after=attempt.retry_after,
            rng=rng,
        )
        await repository.record_attempt(
            session,
            delivery.id,
            state=DeliveryState.PENDING if retry_at else DeliveryState.FAILED,
            status_code=attempt.status_code,
            error=attempt.error,
            next_attempt_at=retry_at,
            now=now,
        )
        failing_since = await repository.note_failure(session, subscription.id, now)
        if now - failing_since >= timedelta(hours=settings.subscription_disable_after_hours):
            await repository.disable(
                session, subscription.id, "every delivery failed for too long", now
            )
            log.error(
                "subscription disabled: every delivery has failed since %s",
                failing_since.isoformat(timespec="seconds"),
                extra={"subscription_id": subscription.id},
            )
            return "disabled", subscription.id
    return ("retrying" if retry_at else "failed"), subscription.id
