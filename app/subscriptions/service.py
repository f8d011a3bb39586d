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
from app.projects.queries import list_projects, within
from app.subscriptions import repository
from app.subscriptions.rules import check_url, new_secret, redacted_url
from app.subscriptions.schemas import (
    DeliveryOut,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatch,
    SubscriptionWithSecret,
)
from app.tokens.principal import Visible

ROTATION_OVERLAP: Final = timedelta(hours=24)


_SHOWN_OTHERWISE = ("url", "statuses", "registration_types", "project_ids")


def answer(subscription: Subscription, *, redact: bool = False) -> SubscriptionOut:
    """The subscription as answered; with `redact` (a `read` token's view) its URL's credentials
    and query values hidden (`redacted_url`): they are often a receiver's secret."""
    return SubscriptionOut(
        **same_named(SubscriptionOut, subscription, but=_SHOWN_OTHERWISE),
        url=redacted_url(subscription.url) if redact else subscription.url,
        statuses=filter_values(subscription.status_filter),
        registration_types=filter_values(subscription.type_filter),
        project_ids=filter_values(subscription.project_filter),
    )


class ProjectsRefused(ValueError):
    """`projectIds` names a project that does not exist or that the token may not see (one
    message for both: never a hint that another project exists), or a limited token asked for
    every project."""


def visible_to(subscription: Subscription, limit: Visible) -> bool:
    """Whether a token limited to `limit` (None: unlimited) sees and manages the subscription:
    only one limited to projects all within the token's (a subscription of every project, or of
    one outside the limit, is 404 to it, as a missing one)."""
    if limit is None:
        return True
    projects = filter_values(subscription.project_filter)
    return projects is not None and set(projects) <= limit


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
    if "project_ids" in given:
        if body.project_ids is None and limit is not None:
            raise ProjectsRefused("`projectIds` must name projects: this token is limited to some")
        subscription.project_filter = await project_filter(session, body.project_ids, limit)
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
