"""`/v1/subscriptions` and `/v1/deliveries`: HTTP only. Each write owns its transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Path, Query, Response
from pydantic import AwareDatetime
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.core.models import Delivery, Subscription
from app.core.problems import ProblemError, found
from app.core.schemas import operation
from app.events.queries import EventKey
from app.subscriptions import queries, repository, service
from app.subscriptions.event_types import event_types
from app.subscriptions.rules import UrlRefused
from app.subscriptions.schemas import (
    AttemptOutcome,
    AttemptPage,
    DeliveryPage,
    EnableIn,
    EnableOut,
    EventTypeList,
    HealthOut,
    PingOutcome,
    RetryFailedIn,
    RetryFailedOut,
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
from app.web.deps import ReadSessionDep, ResourcesDep
from app.web.pages import RowIdPageDep, TimeRowIdPageAsked, TimeRowIdPageDep

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


NO_SUBSCRIPTION = "No subscription with this id."


def _unknown() -> ProblemError:
    return ProblemError(404, NO_SUBSCRIPTION)


async def _found(session: AsyncSession, subscription_id: str, limit: Visible) -> Subscription:
    """The subscription, when it exists and a token limited to `limit` may see it; else 404."""
    return found(await service.visible(session, subscription_id, limit), NO_SUBSCRIPTION)


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
    **operation(
        "createSubscription",
        "Subscribe a URL to the changes",
        403,
        description="Answers the subscription with its `secret`, shown only here and at rotation.",
    ),
)
async def create_subscription(
    resources: ResourcesDep, body: SubscriptionIn, actor: ActorDep, limit: LimitDep
) -> SubscriptionWithSecret:
    with _url_checked():
        subscription = await service.subscribe(
            resources.sessionmaker,
            body,
            allowed_hosts=resources.settings.subscription_allowed_hosts,
            actor=actor,
            limit=limit,
        )
    log.info("subscription created", extra={"subscription_id": subscription.id})
    return service.with_secret(subscription)


@router.get(
    "/subscriptions",
    **operation(
        "listSubscriptions",
        "Every subscription",
        description="With `projectId`, those that receive that project's changes. A token limited "
        "to projects sees only subscriptions limited to projects within its own.",
    ),
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


@router.get("/subscriptions/{id}", **operation("getSubscription", "One subscription", 404))
async def get_subscription(
    session: ReadSessionDep, principal: PrincipalDep, subscription_id: SubscriptionId
) -> SubscriptionOut:
    subscription = await _found(session, subscription_id, principal.projects)
    return service.answer(subscription, redact=_redact(principal))


@router.patch(
    "/subscriptions/{id}",
    **operation(
        "changeSubscription", "Change a subscription (url, filters, description, enabled)", 403, 404
    ),
)
async def change_subscription(
    resources: ResourcesDep,
    subscription_id: SubscriptionId,
    body: SubscriptionPatch,
    actor: ActorDep,
    limit: LimitDep,
) -> SubscriptionOut:
    with _url_checked():
        subscription = await service.edit(
            resources.sessionmaker,
            resources.redis,
            subscription_id,
            body,
            allowed_hosts=resources.settings.subscription_allowed_hosts,
            actor=actor,
            limit=limit,
        )
    return service.answer(found(subscription, NO_SUBSCRIPTION))


@router.delete(
    "/subscriptions/{id}",
    status_code=204,
    **operation("deleteSubscription", "Delete a subscription and its deliveries", 403, 404),
)
async def delete_subscription(
    resources: ResourcesDep, subscription_id: SubscriptionId, actor: ActorDep, limit: LimitDep
) -> Response:
    if not await service.remove(resources.sessionmaker, subscription_id, actor=actor, limit=limit):
        raise _unknown()
    log.info("subscription deleted", extra={"subscription_id": subscription_id})
    return Response(status_code=204)


@router.post(
    "/subscriptions/{id}/rotate-secret",
    **operation(
        "rotateSubscriptionSecret", "A new secret; the old one keeps signing for 24 hours", 403, 404
    ),
)
async def rotate_secret(
    resources: ResourcesDep, subscription_id: SubscriptionId, actor: ActorDep, limit: LimitDep
) -> SubscriptionWithSecret:
    subscription = found(
        await service.rotate_secret(
            resources.sessionmaker, subscription_id, actor=actor, limit=limit
        ),
        NO_SUBSCRIPTION,
    )
    log.info("subscription secret rotated", extra={"subscription_id": subscription_id})
    return service.with_secret(subscription)


@router.get(
    "/subscriptions/{id}/deliveries",
    **operation("listDeliveries", "A subscription's deliveries, newest first", 404),
)
async def list_deliveries(
    session: ReadSessionDep,
    principal: PrincipalDep,
    asked: RowIdPageDep,
    projects: VisibleDep,
    subscription_id: SubscriptionId,
) -> DeliveryPage:
    await _found(session, subscription_id, principal.projects)
    before = asked.after(EventKey)
    rows = await service.deliveries(
        session,
        subscription_id,
        before=before.id if before else None,
        limit=asked.limit + 1,
        projects=projects,
    )
    items, next_cursor = asked.split(rows, lambda row: EventKey(id=row.id))
    return DeliveryPage(items=list(items), next_cursor=next_cursor)


@router.post(
    "/deliveries/{id}/retry",
    status_code=202,
    **operation("retryDelivery", "Deliver again now", 403, 404),
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


OutcomeQuery = Annotated[
    AttemptOutcome | None,
    Query(description="`succeeded` (a 2xx answer) or `failed` (anything else); omitted: both."),
]
SinceQuery = Annotated[
    AwareDatetime | None,
    Query(description="Only attempts made at or after this time (ISO 8601 with an offset)."),
]


@dataclass(frozen=True, slots=True)
class AttemptsAsked:
    """The query of an attempts log (a subscription's or a delivery's): which, and which page."""

    outcome: AttemptOutcome | None
    since: datetime | None
    page: TimeRowIdPageAsked


def _attempts_asked(
    page: TimeRowIdPageDep, outcome: OutcomeQuery = None, since: SinceQuery = None
) -> AttemptsAsked:
    return AttemptsAsked(outcome=outcome, since=since, page=page)


AttemptsAskedDep = Annotated[AttemptsAsked, Depends(_attempts_asked)]


async def _attempt_page(
    session: AsyncSession,
    asked: AttemptsAsked,
    *,
    subscription_id: str | None = None,
    delivery_id: int | None = None,
) -> AttemptPage:
    """The page of the attempts of the subscription or the delivery that `asked` asks for."""
    filters = queries.AttemptFilters(
        subscription_id=subscription_id,
        delivery_id=delivery_id,
        outcome=asked.outcome,
        since=asked.since,
    )
    rows = await queries.attempts(
        session,
        filters,
        limit=asked.page.limit + 1,
        before=asked.page.after(queries.AttemptKey),
    )
    items, next_cursor = asked.page.split(rows, queries.key_of)
    return AttemptPage(items=list(items), next_cursor=next_cursor)


@router.get(
    "/subscriptions/{id}/attempts",
    **operation(
        "listSubscriptionAttempts",
        "A subscription's delivery attempts, newest first",
        404,
        description="Every POST of its deliveries: the headers sent, the payload, the receiver's "
        "status and the first 4 KiB of its answer, the latency and the error. Kept "
        "`EVENT_RETENTION_DAYS`, and never longer than their delivery.",
    ),
)
async def list_subscription_attempts(
    session: ReadSessionDep,
    limited: LimitDep,
    subscription_id: SubscriptionId,
    asked: AttemptsAskedDep,
) -> AttemptPage:
    await _found(session, subscription_id, limited)
    return await _attempt_page(session, asked, subscription_id=subscription_id)


@router.get(
    "/deliveries/{id}/attempts",
    **operation("listDeliveryAttempts", "A delivery's attempts, newest first", 404),
)
async def list_delivery_attempts(
    session: ReadSessionDep, limited: LimitDep, delivery_id: DeliveryId, asked: AttemptsAskedDep
) -> AttemptPage:
    delivery = await session.get(Delivery, delivery_id)
    if delivery is not None and limited is not None and delivery.project_id not in limited:
        delivery = None  # another project's delivery: unknown to this token, as a missing one
    found(delivery, "No delivery with this id.")
    return await _attempt_page(session, asked, delivery_id=delivery_id)


@router.post(
    "/subscriptions/{id}/test",
    **operation(
        "testSubscription",
        "Send a signed `ping` now and answer what came of it",
        403,
        404,
        description="The message is signed like a delivery (`webhook-id` `msg_ping_...`, never a "
        'delivery\'s) and obeys the same destination checks; its body is `{type: "ping", '
        "timestamp, data: {subscriptionId, sentAt}}`. Answers 200 whatever the receiver did.",
    ),
)
async def test_subscription(
    resources: ResourcesDep, subscription_id: SubscriptionId, actor: ActorDep, limit: LimitDep
) -> PingOutcome:
    outcome = await service.ping(
        resources.sessionmaker, subscription_id, resources.settings, actor=actor, limit=limit
    )
    return found(outcome, NO_SUBSCRIPTION)


def _recovery_refused(refused: service.Refused) -> ProblemError:
    if refused is service.Refused.UNKNOWN:
        return _unknown()
    if refused is service.Refused.DISABLED:
        return ProblemError(
            409,
            "The subscription is disabled: nothing would be sent. Enable it with its backlog "
            "(POST /v1/subscriptions/{id}/enable).",
        )
    return ProblemError(409, "The subscription is enabled already.")


@router.post(
    "/subscriptions/{id}/retry-failed",
    **operation(
        "retrySubscriptionFailures",
        "Retry every failed delivery written since a time",
        403,
        404,
        409,
        description="With `dryRun`, only counts them. Otherwise makes them pending and due now (in "
        "change order per registration), audited with the count; 409 for a disabled subscription.",
    ),
)
async def retry_failed(
    resources: ResourcesDep,
    subscription_id: SubscriptionId,
    body: RetryFailedIn,
    actor: ActorDep,
    limit: LimitDep,
) -> RetryFailedOut:
    found = await service.retry_failed(
        resources.sessionmaker,
        resources.redis,
        subscription_id,
        since=body.since,
        dry_run=body.dry_run,
        actor=actor,
        limit=limit,
    )
    if isinstance(found, service.Refused):
        raise _recovery_refused(found)
    return RetryFailedOut(count=found, dry_run=body.dry_run)


@router.post(
    "/subscriptions/{id}/enable",
    **operation(
        "enableSubscription",
        "Enable a disabled subscription, with or without its backlog",
        403,
        404,
        409,
        description="The backlog: what was not delivered since it began failing or was disabled. "
        "With it, the failed deliveries of that time go out again, in change order; without, the "
        "pending ones are skipped (ended `failed`). 409 when it is enabled already.",
    ),
)
async def enable_subscription(
    resources: ResourcesDep,
    subscription_id: SubscriptionId,
    body: EnableIn,
    actor: ActorDep,
    limit: LimitDep,
) -> EnableOut:
    found = await service.enable(
        resources.sessionmaker,
        resources.redis,
        subscription_id,
        backlog=body.backlog,
        actor=actor,
        limit=limit,
    )
    if isinstance(found, service.Refused):
        raise _recovery_refused(found)
    return found


@router.get(
    "/subscriptions/{id}/health",
    **operation(
        "getSubscriptionHealth",
        "A subscription's deliveries over the last 24 hours",
        404,
        description="Success rate, latency (p50, p95), failures by cause and each hour's counts, "
        "from the attempts log; `failing` when every attempt has failed for at least "
        "SUBSCRIPTION_FAILING_ALERT_MINUTES.",
    ),
)
async def subscription_health(
    resources: ResourcesDep,
    session: ReadSessionDep,
    limited: LimitDep,
    subscription_id: SubscriptionId,
) -> HealthOut:
    subscription = await _found(session, subscription_id, limited)
    alert_after = timedelta(minutes=resources.settings.subscription_failing_alert_minutes)
    return await queries.health(session, subscription, now=utcnow(), alert_after=alert_after)


@router.get(
    "/event-types",
    **operation(
        "listEventTypes",
        "The messages a subscription receives, with the JSON Schema of each one's `data`",
    ),
)
async def list_event_types() -> EventTypeList:
    return EventTypeList(items=list(event_types()))
