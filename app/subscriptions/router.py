"""`/v1/subscriptions` and `/v1/deliveries`: HTTP only. Each write owns its transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Path, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.actions import Action
from app.audit.repository import record
from app.changes.signal import publish
from app.core.db import utcnow
from app.core.models import Subscription
from app.core.pagination import (
    DEFAULT_LIMIT,
    LimitQuery,
    RowIdCursorQuery,
    encode_cursor,
    optional_cursor,
)
from app.core.problems import ProblemError, found
from app.core.schemas import problem_responses
from app.events.queries import EventKey
from app.subscriptions import repository, service
from app.subscriptions.rules import UrlRefused
from app.subscriptions.schemas import (
    DeliveryPage,
    SubscriptionIn,
    SubscriptionList,
    SubscriptionOut,
    SubscriptionPatch,
    SubscriptionWithSecret,
)
from app.tokens.principal import Principal, Scope, Visible
from app.web.auth import (
    ActorDep,
    LimitDep,
    PrincipalDep,
    ProjectIdQuery,
    VisibleDep,
    api_router,
)
from app.web.deps import ReadSessionDep, ResourcesDep, SessionDep

log = logging.getLogger(__name__)

router = api_router("/v1", "subscriptions")

SubscriptionId = Annotated[
    str,
    Path(
        alias="id",
        min_length=1,
        max_length=40,
        pattern=r"^[A-Za-z0-9_]+$",
        description="The subscription's id (`sub_...`).",
    ),
]
DeliveryId = Annotated[int, Path(alias="id", ge=1, le=2**62, description="The delivery's id.")]


async def _found(session: AsyncSession, subscription_id: str, limit: Visible) -> Subscription:
    """The subscription, when it exists and a token limited to `limit` may see it; else 404."""
    subscription = await repository.get(session, subscription_id)
    if subscription is not None and not service.visible_to(subscription, limit):
        subscription = None
    return found(subscription, "No subscription with this id.")


@contextmanager
def _url_checked() -> Iterator[None]:
    """A URL the rules refuse (`UrlRefused`), or projects a token may not name
    (`ProjectsRefused`), answered as a 422 problem saying why."""
    try:
        yield
    except UrlRefused as exc:
        raise ProblemError(422, f"The URL is refused: {exc}") from None
    except service.ProjectsRefused as exc:
        raise ProblemError(422, str(exc)) from None


@router.post(
    "/subscriptions",
    status_code=201,
    operation_id="createSubscription",
    summary="Subscribe a URL to the changes",
    description="Answers the subscription with its `secret`, shown only here and at rotation.",
    responses=problem_responses(403),
)
async def create_subscription(
    resources: ResourcesDep,
    session: SessionDep,
    body: SubscriptionIn,
    actor: ActorDep,
    limit: LimitDep,
) -> SubscriptionWithSecret:
    async with session.begin():
        now = utcnow()
        with _url_checked():
            subscription = await service.create(
                session,
                body,
                allowed_hosts=resources.settings.subscription_allowed_hosts,
                now=now,
                limit=limit,
            )
        record(
            session, actor, Action.SUBSCRIPTION_CREATE, subscription.id, now=now, project_id=None
        )
    log.info("subscription created", extra={"subscription_id": subscription.id})
    return service.with_secret(subscription)


@router.get(
    "/subscriptions",
    operation_id="listSubscriptions",
    summary="Every subscription",
    description="With `projectId`, those that receive that project's changes. A token limited "
    "to projects sees only subscriptions limited to projects within its own.",
)
async def list_subscriptions(
    session: ReadSessionDep, principal: PrincipalDep, project_id: ProjectIdQuery = None
) -> SubscriptionList:
    redact = _redact(principal)
    return SubscriptionList(
        items=[
            service.answer(s, redact=redact)
            for s in await repository.every(session)
            if service.visible_to(s, principal.projects)
            and (project_id is None or service.receives(s, project_id))
        ]
    )


def _redact(principal: Principal) -> bool:
    """A `read` token sees URLs without their credentials and query values."""
    return not principal.scope.allows(Scope.WRITE)


@router.get(
    "/subscriptions/{id}",
    operation_id="getSubscription",
    summary="One subscription",
    responses=problem_responses(404),
)
async def get_subscription(
    session: ReadSessionDep, principal: PrincipalDep, subscription_id: SubscriptionId
) -> SubscriptionOut:
    subscription = await _found(session, subscription_id, principal.projects)
    return service.answer(subscription, redact=_redact(principal))


@router.patch(
    "/subscriptions/{id}",
    operation_id="changeSubscription",
    summary="Change a subscription (url, filters, description, enabled)",
    responses=problem_responses(403, 404),
)
async def change_subscription(
    resources: ResourcesDep,
    session: SessionDep,
    subscription_id: SubscriptionId,
    body: SubscriptionPatch,
    actor: ActorDep,
    limit: LimitDep,
) -> SubscriptionOut:
    async with session.begin():
        subscription = await _found(session, subscription_id, limit)
        now = utcnow()
        with _url_checked():
            await service.change(
                session,
                subscription,
                body,
                allowed_hosts=resources.settings.subscription_allowed_hosts,
                now=now,
                limit=limit,
            )
        changed = sorted(body.model_dump(exclude_unset=True, by_alias=True))
        record(
            session,
            actor,
            Action.SUBSCRIPTION_CHANGE,
            subscription_id,
            now=now,
            detail={"fields": changed},
            project_id=None,
        )
    await publish(resources.redis)  # re-enabled: its pending deliveries go out now
    return service.answer(subscription)


@router.delete(
    "/subscriptions/{id}",
    status_code=204,
    operation_id="deleteSubscription",
    summary="Delete a subscription and its deliveries",
    responses=problem_responses(403, 404),
)
async def delete_subscription(
    session: SessionDep, subscription_id: SubscriptionId, actor: ActorDep, limit: LimitDep
) -> Response:
    async with session.begin():
        await repository.delete(session, await _found(session, subscription_id, limit))
        record(
            session,
            actor,
            Action.SUBSCRIPTION_DELETE,
            subscription_id,
            now=utcnow(),
            project_id=None,
        )
    log.info("subscription deleted", extra={"subscription_id": subscription_id})
    return Response(status_code=204)


@router.post(
    "/subscriptions/{id}/rotate-secret",
    operation_id="rotateSubscriptionSecret",
    summary="A new secret; the old one keeps signing for 24 hours",
    responses=problem_responses(403, 404),
)
async def rotate_secret(
    session: SessionDep, subscription_id: SubscriptionId, actor: ActorDep, limit: LimitDep
) -> SubscriptionWithSecret:
    async with session.begin():
        subscription = await _found(session, subscription_id, limit)
        now = utcnow()
        service.rotate(subscription, now=now)
        record(
            session,
            actor,
            Action.SUBSCRIPTION_ROTATE_SECRET,
            subscription_id,
            now=now,
            project_id=None,
        )
    log.info("subscription secret rotated", extra={"subscription_id": subscription_id})
    return service.with_secret(subscription)


@router.get(
    "/subscriptions/{id}/deliveries",
    operation_id="listDeliveries",
    summary="A subscription's deliveries, newest first",
    responses=problem_responses(404),
)
async def list_deliveries(
    session: ReadSessionDep,
    principal: PrincipalDep,
    projects: VisibleDep,
    subscription_id: SubscriptionId,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: RowIdCursorQuery = None,
) -> DeliveryPage:
    await _found(session, subscription_id, principal.projects)
    before = optional_cursor(cursor, EventKey)
    rows = await service.deliveries(
        session,
        subscription_id,
        before=before.id if before else None,
        limit=limit + 1,
        projects=projects,
    )
    items = rows[:limit]
    next_cursor = encode_cursor(EventKey(id=items[-1].id)) if len(rows) > limit else None
    return DeliveryPage(items=items, next_cursor=next_cursor)


@router.post(
    "/deliveries/{id}/retry",
    status_code=202,
    operation_id="retryDelivery",
    summary="Deliver again now",
    responses=problem_responses(403, 404),
)
async def retry_delivery(
    resources: ResourcesDep, delivery_id: DeliveryId, actor: ActorDep, limit: LimitDep
) -> Response:
    unknown = await service.retry_deliveries(
        resources.sessionmaker, resources.redis, [delivery_id], actor=actor, limit=limit
    )
    if unknown:
        raise ProblemError(404, "No delivery with this id.")
    return Response(status_code=202)
