"""The console's forms that change subscriptions and deliveries: create, edit, disable, enable
(with or without the backlog), rotate the secret, send a test event, retry the failed, delete,
retry one delivery. Each calls the same service function as the API's route (audited there).

Every action on one subscription takes `acting_on_subscription`: the form's CSRF token, a
`write` token, and a subscription this token may see (else the 404 page, nothing done); the
service is still given the token's project limit, as through the API. Forms post text, so lists
are comma-separated and a blank field means "every value"; the projects are checkboxes, none
checked meaning every project (as an omitted `projectIds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from app.audit.repository import Actor
from app.console import present
from app.console.access import ActingDep, ViewerDep
from app.console.pages import (
    Refusal,
    comma_list,
    done,
    invalid,
    moment,
    page,
    path,
    redirect,
    text,
)
from app.console.subscriptions import UNKNOWN
from app.console.viewer import Viewer
from app.core.models import Subscription
from app.subscriptions import service as subscription_service
from app.subscriptions.rules import UrlRefused
from app.subscriptions.schemas import SubscriptionIn, SubscriptionPatch
from app.tokens.principal import Visible
from app.web.deps import ResourcesDep

router = APIRouter(prefix="/console")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OnSubscription:
    """Acting on one subscription: who (allowed to act), as whom for the audit trail, and the
    subscription's id (one this token may see)."""

    who: Viewer
    actor: Actor
    id: str

    @property
    def limit(self) -> Visible:
        """The token's project limit, which every service call is given."""
        return self.who.limit

    @property
    def page(self) -> str:
        """The subscription's page, where an action leads back."""
        return f"/console/subscriptions/{path(self.id)}"

    def known(self, result: T | None) -> T:
        """`result` of a service call on the subscription; None (it was deleted since the
        dependency looked) is the 404 page."""
        if result is None:
            raise Refusal(self.who, 404, UNKNOWN)
        return result


async def acting_on_subscription(
    subscription_id: str, resources: ResourcesDep, acting: ActingDep
) -> OnSubscription:
    """The preamble of every action on one subscription: the CSRF token and a `write` token
    (`acting`), then a subscription the token's project limit lets it see, else `Refusal` (404,
    as for a missing one)."""
    async with resources.reader() as session:
        found = await subscription_service.visible(session, subscription_id, acting.who.limit)
    if found is None:
        raise Refusal(acting.who, 404, UNKNOWN)
    return OnSubscription(who=acting.who, actor=acting.actor, id=subscription_id)


OnSubscriptionDep = Annotated[OnSubscription, Depends(acting_on_subscription)]
SubscriptionForm = Annotated[str | None, Form()]


@dataclass(frozen=True, slots=True)
class SubscriptionFields:
    """The subscription form's fields (creating, editing), as `SubscriptionIn` and
    `SubscriptionPatch` take them: comma-separated lists split, blanks as None."""

    url: str | None
    values: dict[str, Any]


def _subscription_fields(
    url: SubscriptionForm = None,
    description: SubscriptionForm = None,
    statuses: SubscriptionForm = None,
    registration_types: SubscriptionForm = None,
    kinds: SubscriptionForm = None,
    project_ids: Annotated[list[str] | None, Form()] = None,
) -> SubscriptionFields:
    return SubscriptionFields(
        url=(url or "").strip() or None,
        values={
            "description": text(description),
            "statuses": comma_list(statuses),
            "registration_types": comma_list(registration_types),
            "kinds": comma_list(kinds),
            # Checkboxes: none checked sends nothing, every project (or a limited token's own).
            "project_ids": [p for p in project_ids or [] if p] or None,
        },
    )


SubscriptionFormDep = Annotated[SubscriptionFields, Depends(_subscription_fields)]


def _refused_fields(who: Viewer, exc: Exception) -> Refusal:
    """What the API answers 422 for, as the refusal page: the model's, the URL's or the
    projects' refusal."""
    if isinstance(exc, ValidationError):
        return invalid(who, exc)
    if isinstance(exc, UrlRefused):
        return Refusal(who, 422, f"The URL is refused: {exc}")
    return Refusal(who, 422, f"Not saved: {exc}")


_FIELD_REFUSALS = (ValidationError, UrlRefused, subscription_service.ProjectsRefused)


def _secret_page(
    request: Request, who: Viewer, subscription: Subscription, message: str
) -> HTMLResponse:
    """The one time a secret is shown (after creating or rotating), like the API's answer."""
    return page(
        request,
        "secret.html",
        {
            "viewer": who,
            "message": message,
            "subscription": subscription_service.answer(subscription),
            "secret": subscription.secret,
        },
    )


def _recovery_refusal(who: Viewer, refused: subscription_service.Refused) -> Refusal:
    if refused is subscription_service.Refused.UNKNOWN:
        return Refusal(who, 404, UNKNOWN)
    if refused is subscription_service.Refused.DISABLED:
        return Refusal(who, 409, "This subscription is disabled: enable it with its backlog.")
    return Refusal(who, 409, "This subscription is enabled already.")


@router.post("/subscriptions")
async def create_subscription(
    request: Request, resources: ResourcesDep, acting: ActingDep, form: SubscriptionFormDep
) -> Response:
    try:
        body = SubscriptionIn(url=form.url or "", **form.values)
        created = await subscription_service.subscribe(
            resources.sessionmaker,
            body,
            allowed_hosts=resources.settings.subscription_allowed_hosts,
            actor=acting.actor,
            limit=acting.who.limit,
        )
    except _FIELD_REFUSALS as exc:
        raise _refused_fields(acting.who, exc) from None
    return _secret_page(request, acting.who, created, "Subscription created.")


@router.post("/subscriptions/{subscription_id}/edit")
async def edit_subscription(
    resources: ResourcesDep, on: OnSubscriptionDep, form: SubscriptionFormDep
) -> Response:
    try:
        # Every field of the form is given (set, even when blank): a blank filter means every
        # value again, a blank description none; a blank URL leaves the URL as it is.
        url = {"url": form.url} if form.url else {}
        body = SubscriptionPatch(**form.values, **url)
        changed = await subscription_service.edit(
            resources.sessionmaker,
            resources.redis,
            on.id,
            body,
            allowed_hosts=resources.settings.subscription_allowed_hosts,
            actor=on.actor,
            limit=on.limit,
        )
    except _FIELD_REFUSALS as exc:
        raise _refused_fields(on.who, exc) from None
    on.known(changed)
    return redirect(f"{on.page}?done=saved")


@router.post("/subscriptions/{subscription_id}/disable")
async def disable_subscription(resources: ResourcesDep, on: OnSubscriptionDep) -> Response:
    changed = await subscription_service.edit(
        resources.sessionmaker,
        resources.redis,
        on.id,
        SubscriptionPatch(enabled=False),
        allowed_hosts=resources.settings.subscription_allowed_hosts,
        actor=on.actor,
        limit=on.limit,
    )
    on.known(changed)
    return redirect(f"{on.page}?done=disabled")


@router.post("/subscriptions/{subscription_id}/enable")
async def enable_subscription(
    request: Request,
    resources: ResourcesDep,
    on: OnSubscriptionDep,
    backlog: Annotated[str | None, Form()] = None,
) -> Response:
    found = await subscription_service.enable(
        resources.sessionmaker,
        resources.redis,
        on.id,
        backlog=backlog == "yes",
        actor=on.actor,
        limit=on.limit,
    )
    if isinstance(found, subscription_service.Refused):
        raise _recovery_refusal(on.who, found)
    message = (
        f"Enabled again with its backlog: {found.retried} failed deliveries go out again."
        if backlog == "yes"
        else f"Enabled again without its backlog: {found.skipped} pending deliveries skipped."
    )
    return done(request, on.who, message, on.page)


@router.post("/subscriptions/{subscription_id}/rotate-secret")
async def rotate_subscription_secret(
    request: Request, resources: ResourcesDep, on: OnSubscriptionDep
) -> Response:
    rotated = on.known(
        await subscription_service.rotate_secret(
            resources.sessionmaker, on.id, actor=on.actor, limit=on.limit
        )
    )
    until = present.when(rotated.previous_secret_until)
    return _secret_page(
        request,
        on.who,
        rotated,
        f"A new signing secret. Deliveries are signed with the old one too until {until}: "
        "give the receiver the new one before then.",
    )


@router.post("/subscriptions/{subscription_id}/test")
async def send_test_event(
    request: Request, resources: ResourcesDep, on: OnSubscriptionDep
) -> Response:
    outcome = await subscription_service.ping(
        resources.sessionmaker, on.id, resources.settings, actor=on.actor, limit=on.limit
    )
    context = {"viewer": on.who, "subscription_id": on.id, "outcome": on.known(outcome)}
    return page(request, "ping.html", context)


async def _retry_failed(
    resources: ResourcesDep,
    who: Viewer,
    actor: Actor,
    subscription_id: str,
    since: datetime | None,
    *,
    dry_run: bool,
) -> int:
    """The count (dry) or the retry of the failed deliveries since `since`, else `Refusal`."""
    if since is None:
        raise Refusal(who, 400, "Say since when (a date and time, UTC).")
    count = await subscription_service.retry_failed(
        resources.sessionmaker,
        resources.redis,
        subscription_id,
        since=since,
        dry_run=dry_run,
        actor=actor,
        limit=who.limit,
    )
    if isinstance(count, subscription_service.Refused):
        raise _recovery_refusal(who, count)
    return count


@router.get("/subscriptions/{subscription_id}/retry-failed")
async def confirm_retry_failed(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    since: str | None = None,
) -> Response:
    chosen = moment(since)
    actor = Actor.of_request(request, who.principal.name)
    count = await _retry_failed(resources, who, actor, subscription_id, chosen, dry_run=True)
    return page(
        request,
        "retry_failed.html",
        {"viewer": who, "subscription_id": subscription_id, "since": chosen, "count": count},
    )


@router.post("/subscriptions/{subscription_id}/retry-failed")
async def retry_failed(
    request: Request,
    resources: ResourcesDep,
    on: OnSubscriptionDep,
    since: Annotated[str | None, Form()] = None,
) -> Response:
    chosen = moment(since)
    count = await _retry_failed(resources, on.who, on.actor, on.id, chosen, dry_run=False)
    return done(
        request,
        on.who,
        f"{count} failed deliveries since {present.when(chosen)} are pending again, sent now "
        "in change order.",
        on.page,
    )


@router.post("/subscriptions/{subscription_id}/delete")
async def delete_subscription(
    request: Request,
    resources: ResourcesDep,
    on: OnSubscriptionDep,
    confirm: Annotated[str | None, Form()] = None,
) -> Response:
    if confirm != on.id:
        raise Refusal(on.who, 400, "Not deleted: type the subscription's id to confirm.")
    if not await subscription_service.remove(
        resources.sessionmaker, on.id, actor=on.actor, limit=on.limit
    ):
        raise Refusal(on.who, 404, UNKNOWN)
    return done(
        request,
        on.who,
        f"Subscription {on.id} is deleted, with its deliveries and their attempts.",
        "/console/subscriptions",
    )


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(
    resources: ResourcesDep,
    acting: ActingDep,
    delivery_id: int,
    subscription_id: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    if not 1 <= delivery_id <= 2**62 or await subscription_service.retry_deliveries(
        resources.sessionmaker,
        resources.redis,
        [delivery_id],
        actor=acting.actor,
        limit=acting.who.limit,
    ):
        raise Refusal(acting.who, 404, "No delivery with this id.")
    back = f"/console/subscriptions/{path(subscription_id)}" if subscription_id else "/console"
    return redirect(f"{back}?retried={delivery_id}")
