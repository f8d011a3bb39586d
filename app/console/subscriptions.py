"""The console's subscriptions as an operator reads them: the list with each one's health, one
subscription's page (its deliveries, attempts and charts) and its attempts log. The forms that
change a subscription: `app.console.subscription_actions`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.console import charts, present
from app.console.access import ViewerDep
from app.console.pages import PAGE_SIZE, STALE_LINK, Refusal, next_link, page, text
from app.console.viewer import Viewer
from app.core.db import utcnow
from app.core.models import Delivery, Subscription
from app.core.pagination import encode_cursor, optional_cursor
from app.core.pagination import page as paged
from app.core.problems import ProblemError
from app.core.settings import Settings
from app.events import queries as event_queries
from app.subscriptions import queries as subscription_queries
from app.subscriptions import repository as subscription_repository
from app.subscriptions import rules as subscription_rules
from app.subscriptions import service as subscription_service
from app.subscriptions.schemas import AttemptOutcome, HealthOut, HourOut, SubscriptionOut
from app.web.deps import ResourcesDep

router = APIRouter(prefix="/console")

SUCCESS_RATE_WINDOW = 100
"""A subscription's success rate is over its newest deliveries: what the first page of
`GET /v1/subscriptions/{id}/deliveries?limit=100` lists."""
ATTEMPTS_SHOWN = 20
"""Attempts on a subscription's page; its attempts page pages through the rest."""
UNKNOWN = "No subscription with this id."
DONE_NOTES = {"saved": "Saved.", "disabled": "Disabled: nothing is sent until it is enabled."}


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    """A subscription as the overview and the subscriptions page list it."""

    subscription: SubscriptionOut
    rate: float | None
    """Succeeded among the finished (succeeded or failed) of its newest deliveries; None when
    none has finished."""
    window: int
    """How many of its newest deliveries `rate` and the counts are over."""
    failed: int
    retrying: int
    """Pending deliveries that have failed at least once (waiting for their next attempt)."""
    failing_since: datetime | None
    oldest_pending: datetime | None
    flagged: bool = False
    """Every attempt has failed for SUBSCRIPTION_FAILING_ALERT_MINUTES (`rules.failing`)."""

    @property
    def failing(self) -> bool:
        """Disabled, or with failed or retrying deliveries: what an operator must look at."""
        return (
            not self.subscription.enabled
            or self.failed > 0
            or self.retrying > 0
            or self.failing_since is not None
        )


async def subscription_rows(
    session: AsyncSession, who: Viewer, settings: Settings
) -> list[SubscriptionRow]:
    """Every subscription with what its newest deliveries say (`SUCCESS_RATE_WINDOW` of them,
    read as `GET /v1/subscriptions/{id}/deliveries` reads them); a `read` viewer sees URLs
    redacted, as the API shows them."""
    known = [
        s
        for s in await subscription_repository.every(session)
        if subscription_service.visible_to(s, who.limit)
    ]
    oldest = await subscription_repository.oldest_pending(session)
    now = utcnow()
    alert_after = timedelta(minutes=settings.subscription_failing_alert_minutes)
    rows = []
    for subscription in known:
        recent = await subscription_service.deliveries(
            session, subscription.id, before=None, limit=SUCCESS_RATE_WINDOW, projects=who.visible
        )
        states = [str(d.state) for d in recent]
        succeeded, failed = states.count("succeeded"), states.count("failed")
        rows.append(
            SubscriptionRow(
                subscription=subscription_service.answer(subscription, redact=not who.may_act),
                rate=succeeded / (succeeded + failed) if succeeded + failed else None,
                window=len(recent),
                failed=failed,
                retrying=sum(1 for d in recent if d.state == "pending" and d.attempts > 0),
                failing_since=subscription.failing_since,
                oldest_pending=oldest.get(subscription.id),
                flagged=subscription_rules.failing(
                    subscription.enabled, subscription.failing_since, now, alert_after
                ),
            )
        )
    return rows


@router.get("/subscriptions")
async def subscriptions(request: Request, resources: ResourcesDep, who: ViewerDep) -> HTMLResponse:
    async with resources.reader() as session:
        rows = await subscription_rows(session, who, resources.settings)
    return page(request, "subscriptions.html", {"viewer": who, "rows": rows})


@router.get("/subscriptions/{subscription_id}")
async def subscription(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    cursor: str | None = None,
) -> Response:
    try:
        before = optional_cursor(text(cursor), event_queries.EventKey)
    except ProblemError:
        raise Refusal(who, 400, STALE_LINK) from None
    async with resources.reader() as session:
        found = await subscription_service.visible(session, subscription_id, who.limit)
        if found is None:
            raise Refusal(who, 404, UNKNOWN)
        rows = await subscription_service.deliveries(
            session,
            subscription_id,
            before=before.id if before else None,
            limit=PAGE_SIZE + 1,
            projects=who.visible,
        )
        retried = await _retry_note(session, found, request.query_params.get("retried"))
        now = utcnow()
        alert_after = timedelta(minutes=resources.settings.subscription_failing_alert_minutes)
        health = await subscription_queries.health(session, found, now=now, alert_after=alert_after)
        attempts = await subscription_queries.attempts(
            session,
            subscription_queries.AttemptFilters(subscription_id=subscription_id),
            limit=ATTEMPTS_SHOWN,
        )
    items = rows[:PAGE_SIZE]
    next_cursor = (
        encode_cursor(event_queries.EventKey(id=items[-1].id)) if len(rows) > PAGE_SIZE else None
    )
    answer = subscription_service.answer(found, redact=not who.may_act)
    return page(
        request,
        "subscription.html",
        {
            "viewer": who,
            "subscription": answer,
            "items": items,
            "next_link": next_link({}, next_cursor),
            "retried": retried,
            "done": DONE_NOTES.get(request.query_params.get("done", "")),
            "health": health,
            "attempts": attempts,
            "success_chart": charts.columns(
                _hourly(health, now, lambda h: 100 * h.succeeded / (h.succeeded + h.failed)),
                title="Attempts that succeeded per hour",
                unit=" %",
            ),
            "failed_chart": charts.columns(
                _hourly(health, now, lambda h: h.failed), title="Failed attempts per hour"
            ),
            "causes_chart": charts.bars(
                sorted(health.failures_by_cause.items()), title="Failures by cause, 24 h"
            ),
            "since_default": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        },
    )


def _hourly(
    health: HealthOut, now: datetime, value: Callable[[HourOut], float]
) -> list[tuple[datetime, float | None]]:
    """The 24 hours of the health window, oldest first, each `value` of its attempts, or None
    for an hour without any (no column)."""
    by_hour = {hour.hour: hour for hour in health.hourly}
    current = now.replace(minute=0, second=0, microsecond=0)
    hours = [current - timedelta(hours=back) for back in range(23, -1, -1)]
    return [(h, value(by_hour[h]) if h in by_hour else None) for h in hours]


async def _retry_note(
    session: AsyncSession, subscription: Subscription, retried: str | None
) -> str | None:
    """What will happen to the delivery just retried (`?retried=ID`): sent now, or when what
    holds it back is gone. None without a (valid) id of this subscription's."""
    if retried is None or not retried.isdigit() or not 1 <= int(retried) <= 2**62:
        return None
    delivery = await session.get(Delivery, int(retried))
    if delivery is None or delivery.subscription_id != subscription.id:
        return None
    if delivery.state != "pending":
        return f"Delivery {delivery.id} was retried; it is {delivery.state} now."
    if not subscription.enabled:
        return (
            f"Delivery {delivery.id} is pending again, but this subscription is disabled: it is "
            "sent when the subscription is enabled again."
        )
    earlier = await subscription_repository.earlier_pending(session, delivery)
    if earlier is not None:
        return (
            f"Delivery {delivery.id} is pending again, queued behind delivery {earlier.id} of the "
            "same registration (still pending, next attempt "
            f"{present.when(earlier.next_attempt_at)}): "
            "it is sent once that one has succeeded or been given up, never before it. Retry "
            f"delivery {earlier.id} to send both sooner."
        )
    return f"Delivery {delivery.id} will be sent again now."


@router.get("/subscriptions/{subscription_id}/attempts")
async def subscription_attempts(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    outcome: str | None = None,
    cursor: str | None = None,
) -> Response:
    try:
        before = optional_cursor(text(cursor), subscription_queries.AttemptKey)
        chosen = AttemptOutcome(outcome) if outcome else None
    except (ProblemError, ValueError):
        raise Refusal(who, 400, STALE_LINK) from None
    async with resources.reader() as session:
        found = await subscription_service.visible(session, subscription_id, who.limit)
        if found is None:
            raise Refusal(who, 404, UNKNOWN)
        filters = subscription_queries.AttemptFilters(
            subscription_id=subscription_id, outcome=chosen
        )
        rows = await subscription_queries.attempts(
            session, filters, limit=PAGE_SIZE + 1, before=before
        )
    items, next_cursor = paged(rows, PAGE_SIZE, subscription_queries.key_of)
    params = {"outcome": chosen.value if chosen else None}
    return page(
        request,
        "attempts.html",
        {
            "viewer": who,
            "subscription": subscription_service.answer(found, redact=not who.may_act),
            "attempts": items,
            "outcome": chosen.value if chosen else "",
            "next_link": next_link(params, next_cursor),
        },
    )
