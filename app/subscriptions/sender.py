"""Sending one subscription's deliveries: the `deliver` job's loop, and recording what came of
each attempt.

One job per subscription at a time (its arq job id: app/core/jobs.py), so its deliveries are handled
by one worker at once, up to `delivery.CONCURRENCY` POSTs in flight, never two of one
registration (repository.due gives them in order). No transaction is open during a POST.

The job works in cycles, at most one per `CYCLE_SECONDS` unless half its slots ended sooner: one
transaction writes the outcomes of every POST that ended since the last cycle and reads what is
due now, then the new POSTs start.
A cycle comes when a POST ends, when changes are numbered (the change feed's `ChangeSignal`), or
after `LOOK_AGAIN_SECONDS` (a retry coming due). Batching by time is what makes a thousand
deliveries a second affordable: a transaction per POST was the worker's whole budget. An idle
job waits `LINGER_SECONDS` for news before it ends, so that a steady flow keeps its job, and its
warm connections, instead of one job per change.

A job that dies mid-way leaves its deliveries pending; arq runs it again once its guard expires:
at least once, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes import outbox
from app.changes.signal import ChangeSignal
from app.core.db import driver_connection, utcnow
from app.core.models import DeliveryState, Subscription
from app.core.settings import Settings
from app.subscriptions import repository
from app.subscriptions.delivery import (
    CONCURRENCY,
    Attempt,
    Bodies,
    Http,
    delivery_client,
    message_id,
    post,
    proxy_for,
    refusal,
    signing_secrets,
    tls_context,
)
from app.subscriptions.repository import Due
from app.subscriptions.rules import next_attempt

log = logging.getLogger(__name__)

CYCLE_SECONDS: Final = 0.1
"""At most one cycle (one transaction) per this, unless `FULL_BATCH` POSTs ended sooner: what a
delivery may wait for its batch."""
FULL_BATCH: Final = CONCURRENCY // 2
"""POSTs ended that start the next cycle before `CYCLE_SECONDS`: the slots, not the clock, then
bound the rate (a POST's slot is free again only once a cycle recorded it)."""
LOOK_AGAIN_SECONDS: Final = 1.0
"""The longest a job waits before it looks at the database again (retries coming due)."""
LINGER_SECONDS: Final = 1.0
"""How long a job with nothing to send waits for news before it ends."""

Finished = list[tuple[Due, Attempt]]


@dataclass(frozen=True)
class Sending:
    """What the subscriptions' jobs of one worker share; built at its start-up."""

    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    signal: ChangeSignal
    """The change feed's: news that changes were numbered wakes a waiting job."""
    tls: ssl.SSLContext = field(default_factory=tls_context)
    """Built once: building it costs more CPU than a delivery."""
    bodies: Bodies = field(default_factory=Bodies)


async def deliver_subscription(
    sending: Sending,
    subscription_id: str,
    *,
    budget_seconds: float,
    rng: random.Random | None = None,
) -> Counter[str]:
    """Send what is due for one subscription until nothing has been due or in flight for
    `LINGER_SECONDS`, or `budget_seconds` is spent (a POST starts only with its timeout left),
    or the subscription is disabled or deleted; every POST started is awaited and recorded.
    Answers how many attempts ended each way (`succeeded`, `retrying`, `failed`), how many of
    the failed were given up (`given_up`), and `disabled` when the job disabled the
    subscription."""
    sessions, settings, signal = sending.sessions, sending.settings, sending.signal
    stop_sending_at = time.monotonic() + budget_seconds - settings.delivery_timeout_seconds
    outcomes: Counter[str] = Counter()
    flying: dict[asyncio.Task[Attempt], Due] = {}
    finished: Finished = []
    active = True
    idle_since: float | None = None
    route: Route | None = None
    http = delivery_client(sending.tls, settings.subscription_allowed_networks)
    try:
        while True:
            began = time.monotonic()
            token = signal.token()  # before the read: news after it wakes the wait below
            room = CONCURRENCY - len(flying)
            async with sessions.begin() as session:
                subscription = await repository.for_sending(
                    session, subscription_id, lock=bool(finished)
                )
                # The cycle's hot statements go to asyncpg directly, in this transaction: its
                # BEGIN went with the read above (SQLAlchemy begins at a session's first
                # statement), so nothing sent on `driver` commits on its own.
                driver = await driver_connection(await session.connection())
                if subscription is not None and finished:
                    ended = await _record(session, driver, subscription, finished, settings, rng)
                    outcomes.update(ended)
                    active = active and not ended["disabled"]
                active = (
                    active
                    and subscription is not None
                    and subscription.enabled
                    and began < stop_sending_at
                )
                batch: list[Due] = []
                if active and room > 0:
                    batch = await repository.due(
                        driver,
                        subscription_id,
                        now=utcnow(),
                        limit=room,
                        flying=[delivery.id for delivery in flying.values()],
                    )
            finished = []
            if subscription is not None and batch:
                if route is None or route.url != subscription.url:
                    route = Route.to(subscription.url, settings)
                _start(http, sending, subscription, route, batch, flying)
            if flying or batch:
                idle_since = None
            elif not active or time.monotonic() - (idle_since or began) >= LINGER_SECONDS:
                break
            else:
                idle_since = idle_since or began
            await _wait(flying, signal, token)
            await wait_for_batch(flying, began + CYCLE_SECONDS)
            finished = [(flying.pop(task), task.result()) for task in _done(flying)]
    finally:
        for task in flying:
            task.cancel()
        await asyncio.gather(*flying, return_exceptions=True)
        await http.close()
    return outcomes


def _done(flying: dict[asyncio.Task[Attempt], Due]) -> list[asyncio.Task[Attempt]]:
    return [task for task in flying if task.done()]


async def _wait(flying: dict[asyncio.Task[Attempt], Due], signal: ChangeSignal, token: int) -> None:
    """Until a POST ends, changes are numbered, or `LOOK_AGAIN_SECONDS` pass."""
    if _done(flying):
        return
    news = asyncio.create_task(signal.wait(token, LOOK_AGAIN_SECONDS))
    try:
        await asyncio.wait({news, *flying}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        news.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await news


async def wait_for_batch(flying: dict[asyncio.Task[Attempt], Due], until: float) -> None:
    """Let the cycle's batch fill (POSTs that end, changes numbered meanwhile) until the
    monotonic time `until`, or until `FULL_BATCH` POSTs have ended. Fewer, larger cycles cost
    PostgreSQL and this worker less per delivery (the due read, the transaction), and leave more
    of the machine to the callbacks; the slots keep the rate up under load."""
    while (left := until - time.monotonic()) > 0:
        running = [task for task in flying if not task.done()]
        if len(flying) - len(running) >= FULL_BATCH:
            return
        if not running:  # only changes numbered can come meanwhile: the clock decides
            await asyncio.sleep(left)
            return
        await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)


@dataclass(frozen=True, slots=True)
class Route:
    """How a job sends to its subscription's URL, worked out when the job first sends and again
    when the URL changes (the environment and the settings do not change while a process runs):
    the proxy (`proxy_for`), and why nothing may be sent there (`refusal`), or None."""

    url: str
    proxy: str | None
    refused: str | None

    @classmethod
    def to(cls, url: str, settings: Settings) -> Route:
        why = refusal(
            url, settings.subscription_allowed_hosts, settings.subscription_allowed_networks
        )
        return cls(url, proxy_for(url), why)


def _start(
    http: Http,
    sending: Sending,
    subscription: Subscription,
    route: Route,
    batch: list[Due],
    flying: dict[asyncio.Task[Attempt], Due],
) -> None:
    """Start a POST for each delivery of `batch` whose registration has none in flight; when the
    URL may not be called (`route.refused`: the settings narrowed since it was made, or it names
    an address not allowed), an attempt that sends nothing and fails saying why."""
    busy = {delivery.registration_id for delivery in flying.values()}
    secrets = signing_secrets(subscription, utcnow())
    for delivery in batch:
        if delivery.registration_id in busy:
            continue
        busy.add(delivery.registration_id)
        if route.refused is not None:
            flying[asyncio.ensure_future(_not_sent(route.refused))] = delivery
            continue
        task = asyncio.ensure_future(
            post(
                http,
                route.url,
                secrets,
                message_id(delivery.id),
                sending.bodies.of(delivery.change_id, delivery.change),
                seconds=sending.settings.delivery_timeout_seconds,
                proxy=route.proxy,
            )
        )
        flying[task] = delivery


async def _not_sent(why: str) -> Attempt:
    return Attempt(None, why)


def _attempt_row(subscription_id: str, delivery_id: int, attempt: Attempt) -> dict[str, Any]:
    """The attempts log's row of one attempt (`outbox.log_attempts`)."""
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


async def _record(
    session: AsyncSession,
    driver: Any,
    subscription: Subscription,
    finished: Finished,
    settings: Settings,
    rng: random.Random | None,
) -> Counter[str]:
    """Write the outcomes of attempts that have ended, and the attempts themselves (the attempts
    log), in `session`'s transaction (`driver`: its asyncpg connection); the subscription's row
    is locked (repository.for_sending). Successes take one
    statement per status code, the log one for all."""
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
            if retry_at is None:  # marked, and counted by the job (`given_up`)
                error = (
                    f"{error}; given up: still failing {settings.delivery_give_up_hours:g} h "
                    "after it was written (DELIVERY_GIVE_UP_HOURS)"
                )
                ended["given_up"] += 1
        await outbox.record_attempt(
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
        await outbox.record_successes(driver, ids, status_code, now)
    await outbox.log_attempts(
        driver, [_attempt_row(subscription.id, d.id, attempt) for d, attempt in finished]
    )
    if gone:
        await repository.disable(session, subscription.id, "the receiver answered 410", now)
        log.warning(
            "subscription disabled: its receiver answered 410",
            extra={"subscription_id": subscription.id},
        )
        ended["disabled"] += 1
        return ended
    if succeeded and subscription.failing_since is not None:
        await repository.note_success(session, subscription.id)
    if failures and not succeeded:
        # "Every attempt has failed since": a success in the same batch says otherwise.
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
            ended["disabled"] += 1
    return ended
