"""What the API's, the console's and the command line's doors do to subscriptions and deliveries.
Runs in the caller's transaction and never commits, except `retry_deliveries` (which owns its one
transaction, since it must wake the dispatchers after the commit) and `prune_attempts` (the prune
cron's batches, each its own transaction)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Final

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
from app.core.settings import Settings
from app.projects.queries import list_projects, within
from app.subscriptions import repository
from app.subscriptions.delivery import (
    delivery_client,
    ping_body,
    ping_message_id,
    post,
    proxy_for,
    refusal,
    signing_secrets,
    tls_context,
)
from app.subscriptions.rules import check_url, new_secret, redacted_url
from app.subscriptions.schemas import (
    DeliveryOut,
    EnableOut,
    PingOutcome,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatch,
    SubscriptionWithSecret,
)
from app.tokens.principal import Visible

ROTATION_OVERLAP: Final = timedelta(hours=24)


_SHOWN_OTHERWISE = ("url", "statuses", "registration_types", "kinds", "project_ids")


def answer(subscription: Subscription, *, redact: bool = False) -> SubscriptionOut:
    """The subscription as answered; with `redact` (a `read` token's view) its URL's credentials
    and query values hidden (`redacted_url`): they are often a receiver's secret."""
    return SubscriptionOut(
        **same_named(SubscriptionOut, subscription, but=_SHOWN_OTHERWISE),
        url=redacted_url(subscription.url) if redact else subscription.url,
        statuses=filter_values(subscription.status_filter),
        registration_types=filter_values(subscription.type_filter),
        kinds=filter_values(subscription.kind_filter),
        project_ids=filter_values(subscription.project_filter),
    )


class ProjectsRefused(ValueError):
    """`projectIds` names a project that does not exist or that the token may not see (one
    message for both: never a hint that another project exists), or a limited token asked for
    every project."""


def _audit(
    session: AsyncSession,
    actor: Actor,
    action: Action,
    subscription_id: str,
    *,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """The audit entry of an action on a subscription: it belongs to no one project (it may
    receive several), so the entry names none."""
    record(session, actor, action, subscription_id, now=now, project_id=None, detail=detail)


def visible_to(subscription: Subscription, limit: Visible) -> bool:
    """Whether a token limited to `limit` (None: unlimited) sees and manages the subscription:
    only one limited to projects all within the token's (a subscription of every project, or of
    one outside the limit, is 404 to it, as a missing one)."""
    if limit is None:
        return True
    projects = filter_values(subscription.project_filter)
    return projects is not None and set(projects) <= limit


async def visible(
    session: AsyncSession, subscription_id: str, limit: Visible
) -> Subscription | None:
    """The subscription, when it exists and a token limited to `limit` may see it (`visible_to`);
    else None, as for a missing one."""
    subscription = await repository.get(session, subscription_id)
    if subscription is None or not visible_to(subscription, limit):
        return None
    return subscription


def receives(subscription: Subscription, project_id: str) -> bool:
    """Whether the subscription receives `project_id`'s changes (the `projectId` filter of the
    listing; the outbox applies the same rule in SQL)."""
    projects = filter_values(subscription.project_filter)
    return projects is None or project_id in projects


async def project_filter(
    session: AsyncSession, asked: list[str] | None, limit: Visible
) -> str | None:
    """The `project_filter` to keep for `projectIds` = `asked` by a token limited to `limit`:
    `asked` (each project existing and within the limit), or the token's projects when nothing
    is asked. `ProjectsRefused` otherwise."""
    if asked is None:
        if limit is None:
            return None
        asked = sorted(limit)
    existing = {project.id for project in await list_projects(session, limit)}
    refused = [project for project in asked if project not in existing]
    if refused:
        raise ProjectsRefused(f"`projectIds` names no project known here: {', '.join(refused)}")
    return filter_text(sorted(set(asked)))


def with_secret(subscription: Subscription) -> SubscriptionWithSecret:
    return SubscriptionWithSecret(**answer(subscription).model_dump(), secret=subscription.secret)


async def create(
    session: AsyncSession,
    body: SubscriptionIn,
    *,
    allowed_hosts: Sequence[str],
    now: datetime,
    limit: Visible = None,
) -> Subscription:
    """A new, enabled subscription with a new secret, made by a token limited to `limit`. Raises
    UrlRefused for a URL not allowed, ProjectsRefused for projects it may not name."""
    subscription = Subscription(
        id=repository.new_id(),
        url=check_url(body.url, allowed_hosts),
        description=body.description,
        status_filter=filter_text(body.statuses),
        type_filter=filter_text(body.registration_types),
        kind_filter=filter_text(body.kinds),
        project_filter=await project_filter(session, body.project_ids, limit),
        enabled=True,
        secret=new_secret(),
        created_at=now,
        updated_at=now,
    )
    repository.add(session, subscription)
    return subscription


async def change(
    session: AsyncSession,
    subscription: Subscription,
    body: SubscriptionPatch,
    *,
    allowed_hosts: Sequence[str],
    now: datetime,
    limit: Visible = None,
) -> None:
    """Change the fields `body` gives, by a token limited to `limit`. Raises UrlRefused,
    ProjectsRefused (`projectIds` null from a limited token: every project is not its to give)."""
    given = body.model_fields_set
    if "url" in given and body.url is not None:
        subscription.url = check_url(body.url, allowed_hosts)
    if "statuses" in given:
        subscription.status_filter = filter_text(body.statuses)
    if "registration_types" in given:
        subscription.type_filter = filter_text(body.registration_types)
    if "kinds" in given:
        subscription.kind_filter = filter_text(body.kinds)
    if "project_ids" in given:
        if body.project_ids is None and limit is not None:
            raise ProjectsRefused("`projectIds` must name projects: this token is limited to some")
        subscription.project_filter = await project_filter(session, body.project_ids, limit)
    if "description" in given:
        subscription.description = body.description
    if "enabled" in given and body.enabled is not None:
        if body.enabled or subscription.enabled:  # disabled again: it began before
            subscription.disabled_at = None if body.enabled else now
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
    projects: Visible = None,
) -> list[DeliveryOut]:
    """A subscription's deliveries, newest first, before the id `before`, only those in `state`
    when given, only those of `projects` (None: every project). The one listing of deliveries:
    the API, the console and the CLI come here."""
    statement = within(
        select(*_DELIVERY_COLUMNS, RegistrationChange.seq)
        .join(RegistrationChange, RegistrationChange.id == Delivery.change_id)
        .where(Delivery.subscription_id == subscription_id)
        .order_by(Delivery.id.desc())
        .limit(limit),
        Delivery.project_id,
        projects,
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
    limit: Visible = None,
) -> list[int]:
    """Make each delivery pending and due now (one transaction, with an audit entry by `actor`
    for each), then wake the dispatchers. Answers the ids that name no delivery of `limit`'s
    projects (None: of any project): another project's delivery is unknown to a limited token.
    The one implementation of a retry: the API, the console and the CLI come here."""
    unknown = []
    async with sessionmaker.begin() as session:
        for delivery_id in delivery_ids:
            now = utcnow()
            project_id = await outbox.retry_now(session, delivery_id, now, limit)
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


PRUNE_BATCH: Final = 5000


async def prune_attempts(
    sessionmaker: async_sessionmaker[AsyncSession], *, before: datetime, stop_at: float
) -> tuple[int, bool]:
    """Delete the attempts made before `before`, `PRUNE_BATCH` per transaction, until done or
    `stop_at` (monotonic clock) has passed. Answers (deleted, complete). Its own transactions."""
    total = 0
    while True:
        async with sessionmaker.begin() as session:
            deleted = await outbox.prune_attempts(session, before=before, limit=PRUNE_BATCH)
        total += deleted
        if deleted < PRUNE_BATCH:
            return total, True
        if time.monotonic() >= stop_at:
            return total, False


async def send_test(
    subscription: Subscription, settings: Settings, *, now: datetime
) -> PingOutcome:
    """POST a signed `ping` to the subscription's URL now and answer what came of it. The same
    checks as a delivery (`refusal`: SUBSCRIPTION_ALLOWED_HOSTS as they stand, and the addresses
    of SUBSCRIPTION_ALLOWED_NETWORKS, checked again when the name resolves); a refused URL is not
    called. Its own HTTP client, closed at the end; no transaction may be open meanwhile. Not
    kept in the attempts log: it belongs to no delivery."""
    why = refusal(
        subscription.url,
        settings.subscription_allowed_hosts,
        settings.subscription_allowed_networks,
    )
    if why is not None:
        return PingOutcome(
            delivered=False, response_status=None, response_body=None, latency_ms=None, error=why
        )
    http = delivery_client(tls_context(), settings.subscription_allowed_networks)
    try:
        attempt = await post(
            http,
            subscription.url,
            signing_secrets(subscription, now),
            ping_message_id(),
            ping_body(subscription.id, now),
            seconds=settings.delivery_timeout_seconds,
            proxy=proxy_for(subscription.url),
        )
    finally:
        await http.close()
    return PingOutcome(
        delivered=attempt.succeeded,
        response_status=attempt.status_code,
        response_body=attempt.response_body,
        latency_ms=attempt.latency_ms,
        error=attempt.error,
    )


class Refused(Enum):
    """Why a recovery was not done."""

    UNKNOWN = "unknown"
    DISABLED = "disabled"
    ENABLED = "enabled"


async def retry_failed(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    subscription_id: str,
    *,
    since: datetime,
    dry_run: bool,
    actor: Actor,
    limit: Visible = None,
) -> int | Refused:
    """Make every failed delivery of the subscription written at or after `since` pending and
    due now (one transaction, one audit entry by `actor` with the count), then wake the
    dispatchers; answers how many. `dry_run`: only count them (nothing changes, no entry).
    Refused for an unknown subscription, and (not dry) for a disabled one: nothing would be
    sent (`enable` with its backlog is the way)."""
    async with sessionmaker.begin() as session:
        subscription = await visible(session, subscription_id, limit)
        if subscription is None:
            return Refused.UNKNOWN
        if dry_run:
            return await outbox.count_failed(session, subscription_id, since)
        if not subscription.enabled:
            return Refused.DISABLED
        now = utcnow()
        count = await outbox.retry_failed(session, subscription_id, since, now)
        detail = {"since": since.isoformat(), "count": count}
        _audit(
            session,
            actor,
            Action.SUBSCRIPTION_RETRY_FAILED,
            subscription_id,
            now=now,
            detail=detail,
        )
    await publish(redis)
    return count


SKIPPED = "skipped: the subscription was enabled again without its backlog"


async def enable(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    subscription_id: str,
    *,
    backlog: bool,
    actor: Actor,
    limit: Visible = None,
) -> EnableOut | Refused:
    """Enable a disabled subscription (one transaction, audited by `actor`), then wake the
    dispatchers. Its backlog is what was not delivered since it began failing or was disabled,
    whichever came first: with `backlog`, the deliveries that failed since then are made pending
    (those still pending stay so); without, the pending ones end `failed` (`SKIPPED`) and only
    new changes go out. Changes that reached the feed while it was disabled have no delivery
    (the outbox writes them for enabled subscriptions only): no backlog holds them."""
    async with sessionmaker.begin() as session:
        subscription = await visible(session, subscription_id, limit)
        if subscription is None:
            return Refused.UNKNOWN
        if subscription.enabled:
            return Refused.ENABLED
        now = utcnow()
        starts = [t for t in (subscription.failing_since, subscription.disabled_at) if t]
        retried = skipped = 0
        if backlog and starts:
            retried = await outbox.retry_failed(
                session, subscription_id, min(starts), now, by_outcome=True
            )
        if not backlog:
            skipped = await outbox.fail_pending(session, subscription_id, SKIPPED, now)
        subscription.enabled = True
        subscription.disabled_reason = subscription.disabled_at = None
        subscription.failing_since = None
        subscription.updated_at = now
        detail = {"backlog": backlog, "retried": retried, "skipped": skipped}
        _audit(session, actor, Action.SUBSCRIPTION_ENABLE, subscription_id, now=now, detail=detail)
    await publish(redis)
    return EnableOut(subscription=answer(subscription), retried=retried, skipped=skipped)


# --- the audited actions: each owns its one transaction, with its audit entry by `actor`; the API
# and the console both come here.


async def subscribe(
    sessionmaker: async_sessionmaker[AsyncSession],
    body: SubscriptionIn,
    *,
    allowed_hosts: Sequence[str],
    actor: Actor,
    limit: Visible = None,
) -> Subscription:
    """`create` by a token limited to `limit`, audited. Raises UrlRefused for a URL not allowed,
    ProjectsRefused for projects it may not name (nothing is kept)."""
    async with sessionmaker.begin() as session:
        now = utcnow()
        subscription = await create(
            session, body, allowed_hosts=allowed_hosts, now=now, limit=limit
        )
        _audit(session, actor, Action.SUBSCRIPTION_CREATE, subscription.id, now=now)
    return subscription


async def edit(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    subscription_id: str,
    body: SubscriptionPatch,
    *,
    allowed_hosts: Sequence[str],
    actor: Actor,
    limit: Visible = None,
) -> Subscription | None:
    """`change`, audited with the fields given, then wake the dispatchers (enabled again: its
    pending deliveries go out now). None for a subscription unknown to `limit`; raises
    UrlRefused, ProjectsRefused."""
    async with sessionmaker.begin() as session:
        subscription = await visible(session, subscription_id, limit)
        if subscription is None:
            return None
        now = utcnow()
        await change(session, subscription, body, allowed_hosts=allowed_hosts, now=now, limit=limit)
        changed = sorted(body.model_dump(exclude_unset=True, by_alias=True))
        action = Action.SUBSCRIPTION_CHANGE
        _audit(session, actor, action, subscription_id, now=now, detail={"fields": changed})
    await publish(redis)
    return subscription


async def remove(
    sessionmaker: async_sessionmaker[AsyncSession],
    subscription_id: str,
    *,
    actor: Actor,
    limit: Visible = None,
) -> bool:
    """Delete a subscription, its deliveries and their attempts, audited; False if unknown."""
    async with sessionmaker.begin() as session:
        subscription = await visible(session, subscription_id, limit)
        if subscription is None:
            return False
        await repository.delete(session, subscription)
        _audit(session, actor, Action.SUBSCRIPTION_DELETE, subscription_id, now=utcnow())
    return True


async def rotate_secret(
    sessionmaker: async_sessionmaker[AsyncSession],
    subscription_id: str,
    *,
    actor: Actor,
    limit: Visible = None,
) -> Subscription | None:
    """`rotate`, audited; None for an unknown subscription."""
    async with sessionmaker.begin() as session:
        subscription = await visible(session, subscription_id, limit)
        if subscription is None:
            return None
        now = utcnow()
        rotate(subscription, now=now)
        _audit(session, actor, Action.SUBSCRIPTION_ROTATE_SECRET, subscription_id, now=now)
    return subscription


async def ping(
    sessionmaker: async_sessionmaker[AsyncSession],
    subscription_id: str,
    settings: Settings,
    *,
    actor: Actor,
    limit: Visible = None,
) -> PingOutcome | None:
    """`send_test` (no transaction open during the POST), then its audit entry with the outcome.
    None for an unknown subscription."""
    async with sessionmaker() as session:
        subscription = await visible(session, subscription_id, limit)
    if subscription is None:
        return None
    outcome = await send_test(subscription, settings, now=utcnow())
    async with sessionmaker.begin() as session:
        detail = {"delivered": outcome.delivered, "responseStatus": outcome.response_status}
        action = Action.SUBSCRIPTION_TEST
        _audit(session, actor, action, subscription_id, now=utcnow(), detail=detail)
    return outcome
