"""Sending a subscription's deliveries: POST each change, signed (Standard Webhooks), and record
what came of it.

One job per subscription at a time (its arq job id: app/jobs.py), so its deliveries are handled
by one worker at once, up to `CONCURRENCY` POSTs in flight, never two of one registration
(repository.due gives them in order). No transaction is open during a POST: deliveries are read,
sent, then each outcome written as its POST ends. A job that dies mid-way leaves its deliveries
pending; arq runs it again once its guard expires: at least once, never lost. Receivers
deduplicate by `webhook-id`, the same on every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

import aiohttp
import certifi
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.schemas import ChangeOut
from app.db import utcnow
from app.models import Delivery, DeliveryState, RegistrationChange, Subscription
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
    http: aiohttp.ClientSession,
    url: str,
    secrets: list[str],
    delivery_id: int,
    body: str,
    *,
    seconds: float,
) -> Attempt:
    """One POST, given `seconds` in all (connecting, sending, the answer's head). Redirects are
    not followed (a 3xx is a failure): the URL checked at creation is the only place the service
    calls. Errors name their kind, never the URL (it may carry a token in its query)."""
    at = utcnow()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id(delivery_id),
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature(secrets, message_id(delivery_id), at, body),
    }
    try:
        async with http.post(
            url,
            data=body.encode(),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=seconds),
            allow_redirects=False,
        ) as response:
            status = response.status
            retry_after = response.headers.get("retry-after")
            # What the receiver says is not kept; read a little of it so that the connection can
            # serve the next delivery, and drop a connection whose answer goes on.
            await response.content.read(ANSWER_READ_BYTES)
            if not response.content.at_eof():
                response.close()
    except TimeoutError:
        return Attempt(None, f"no answer within {seconds:g} s")
    except aiohttp.ClientConnectorError:
        return Attempt(None, "could not connect")
    except aiohttp.ServerDisconnectedError:
        return Attempt(None, "the receiver closed the connection without an answer")
    except aiohttp.ClientError as exc:
        return Attempt(None, f"could not deliver ({type(exc).__name__})")
    if 200 <= status < 300:
        return Attempt(status, None)
    return Attempt(status, f"answered {status}", retry_after_seconds(retry_after, utcnow()))


CONCURRENCY = 16
"""POSTs in flight at once for one subscription (one job per subscription at a time)."""
LOOK_AGAIN_SECONDS = 0.1
"""While POSTs are in flight, how often to look for deliveries that came due meanwhile."""
ANSWER_READ_BYTES = 64 * 1024
"""How much of a receiver's answer is read (and thrown away) before its connection is reused."""


def tls_context() -> ssl.SSLContext:
    """The TLS settings every delivery client shares: certifi's authorities, as httpx's (Sinch's
    client). Built once per worker: building it costs more CPU than a delivery."""
    return ssl.create_default_context(cafile=certifi.where())


def delivery_client(tls: ssl.SSLContext) -> aiohttp.ClientSession:
    """The HTTP client of one subscription's job: a pool of its own, `CONCURRENCY` connections,
    so that one subscriber's slowness never takes a connection another subscriber or Sinch's
    client needs. aiohttp, not httpx: httpx's pool spent ten times the CPU per POST with 16 in
    flight (docs/architecture.md, "Deliveries"). Proxies from the environment are honoured, as
    Sinch's client does. The caller closes it; create it inside the running event loop."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONCURRENCY, ssl=tls, keepalive_timeout=30),
        trust_env=True,
    )


def _secrets(subscription: Subscription, now: datetime) -> list[str]:
    secrets = [subscription.secret]
    if subscription.previous_secret and (subscription.previous_secret_until or now) > now:
        secrets.append(subscription.previous_secret)  # a rotation's overlap: both sign
    return secrets


async def deliver_subscription(
    sessions: async_sessionmaker[AsyncSession],
    tls: ssl.SSLContext,
    settings: Settings,
    subscription_id: str,
    *,
    budget_seconds: float,
    rng: random.Random | None = None,
) -> Counter[str]:
    """Send what is due for one subscription, up to `CONCURRENCY` POSTs at once, until nothing is
    due or in flight, or `budget_seconds` is spent (a POST starts only with its timeout left).
    Each outcome is written as soon as its POST ends, so a slow receiver's answer for one
    registration holds back no other registration's delivery or retry. Never two deliveries of
    one registration at once (order). Answers how many ended each way."""
    stop_at = time.monotonic() + budget_seconds - settings.delivery_timeout_seconds
    outcomes: Counter[str] = Counter()
    flying: dict[asyncio.Task[Attempt], Delivery] = {}
    disabled = False
    http = delivery_client(tls)
    try:
        while True:
            if not disabled and time.monotonic() < stop_at and len(flying) < CONCURRENCY:
                subscription = await _start_due(
                    sessions, http, settings, subscription_id, flying, limit=CONCURRENCY
                )
                disabled = subscription is None
            if not flying:
                break
            done, _ = await asyncio.wait(
                flying, timeout=LOOK_AGAIN_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                continue
            # Every POST that has ended, in one transaction: at 1,000 deliveries/s a transaction
            # each was the worker's whole budget.
            finished = [(flying.pop(task), task.result()) for task in done]
            async with sessions.begin() as session:
                ended = await _record(session, subscription_id, finished, settings, rng)
            outcomes.update(ended)
            disabled = disabled or bool(ended["disabled"])
    finally:
        for task in flying:
            task.cancel()
        await asyncio.gather(*flying, return_exceptions=True)
        await http.close()
    return outcomes


async def _start_due(
    sessions: async_sessionmaker[AsyncSession],
    http: aiohttp.ClientSession,
    settings: Settings,
    subscription_id: str,
    flying: dict[asyncio.Task[Attempt], Delivery],
    *,
    limit: int,
) -> Subscription | None:
    """Start POSTs for due deliveries, up to `limit` in flight, none of a registration already in
    flight. Answers the subscription, or None when it is gone or disabled."""
    async with sessions() as session:
        subscription = await repository.get(session, subscription_id)
        if subscription is None or not subscription.enabled:
            return None
        ids = {delivery.id for delivery in flying.values()}
        batch = await repository.due(
            session, subscription_id, now=utcnow(), limit=limit - len(flying), flying=ids
        )
    busy = {delivery.registration_id for delivery in flying.values()}
    secrets = _secrets(subscription, utcnow())
    for delivery, change in batch:
        if len(flying) >= limit:
            break
        if delivery.id in ids or delivery.registration_id in busy:
            continue
        busy.add(delivery.registration_id)
        task = asyncio.ensure_future(
            post(
                http,
                subscription.url,
                secrets,
                delivery.id,
                body_of(change),
                seconds=settings.delivery_timeout_seconds,
            )
        )
        flying[task] = delivery
    return subscription


async def _record(
    session: AsyncSession,
    subscription_id: str,
    finished: list[tuple[Delivery, Attempt]],
    settings: Settings,
    rng: random.Random | None,
) -> Counter[str]:
    """Write the outcomes of attempts that have ended, the subscription's row locked first
    (repository.lock). Successes take one statement per status code."""
    await repository.lock(session, subscription_id)
    now = utcnow()
    ended: Counter[str] = Counter()
    succeeded: dict[int, list[int]] = {}
    failures = 0
    gone = False
    for delivery, attempt in finished:
        if attempt.succeeded and attempt.status_code is not None:
            succeeded.setdefault(attempt.status_code, []).append(delivery.id)
            ended["succeeded"] += 1
            continue
        failures += 1
        if attempt.status_code == 410:
            state, retry_at = DeliveryState.FAILED, None
            error: str | None = "answered 410 Gone: the subscription is disabled"
            gone = True
        else:
            retry_at = next_attempt(
                attempts=delivery.attempts + 1,
                created_at=delivery.created_at,
                now=now,
                pauses=settings.delivery_retry_seconds,
                give_up_after=timedelta(hours=settings.delivery_give_up_hours),
                retry_after=attempt.retry_after,
                rng=rng,
            )
            state = DeliveryState.PENDING if retry_at else DeliveryState.FAILED
            error = attempt.error
        await repository.record_attempt(
            session,
            delivery.id,
            state=state,
            status_code=attempt.status_code,
            error=error,
            next_attempt_at=retry_at,
            now=now,
        )
        ended["retrying" if retry_at else "failed"] += 1
    for status_code, ids in succeeded.items():
        await repository.record_successes(session, ids, status_code, now)
    if gone:
        await repository.disable(session, subscription_id, "the receiver answered 410", now)
        log.warning(
            "subscription disabled: its receiver answered 410",
            extra={"subscription_id": subscription_id},
        )
        ended["disabled"] += 1
        return ended
    if succeeded:
        await repository.note_success(session, subscription_id)
    if failures and not succeeded:
        # "Every attempt has failed since": a success in the same batch says otherwise.
        failing_since = await repository.note_failure(session, subscription_id, now)
        if now - failing_since >= timedelta(hours=settings.subscription_disable_after_hours):
            await repository.disable(
                session, subscription_id, "every delivery failed for too long", now
            )
            log.error(
                "subscription disabled: every delivery has failed since %s",
                failing_since.isoformat(timespec="seconds"),
                extra={"subscription_id": subscription_id},
            )
            ended["disabled"] += 1
    return ended
