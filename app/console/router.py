"""The operator console's pages (`/console`). HTTP only: each page reads through the same query
modules as the internal API (so every number equals what the API answers), and each action calls
the same service function as the API's write route (one implementation of each write).

Every page is plain HTML that works without JavaScript; its own CSS is served from the package.
Sessions and CSRF: `app.console.session`. A page needs a session whose principal still exists
(`principal_named`, asked on every request); an action (a POST) also needs the session's CSRF
token and a principal whose scope allows `write`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import queries as audit_queries
from app.audit.repository import Actor
from app.changes.live import SequencerDep
from app.console import charts, present
from app.console import session as sessions
from app.core.db import utcnow
from app.core.models import Delivery, EventState, Subscription
from app.core.pagination import encode_cursor, optional_cursor, page
from app.core.problems import ProblemError
from app.core.schemas import MAX_TEXT_LENGTH
from app.core.settings import Settings
from app.counts import service as counts_service
from app.events import queries as event_queries
from app.events import service as event_service
from app.events.schemas import EventOut
from app.forecasts import queries as forecast_queries
from app.forecasts.model import MIN_SAMPLES
from app.projects import queries as project_queries
from app.projects import service as project_service
from app.projects.secrets import SecretsKeyMissing, WrongSecretsKey, box_of
from app.registrations import queries as registration_queries
from app.registrations import service as registration_service
from app.registrations.facts import Reason
from app.registrations.schemas import HistoryItem, RegistrationOut
from app.subscriptions import queries as subscription_queries
from app.subscriptions import repository as subscription_repository
from app.subscriptions import rules as subscription_rules
from app.subscriptions import service as subscription_service
from app.subscriptions.rules import UrlRefused
from app.subscriptions.schemas import (
    AttemptOutcome,
    HealthOut,
    HourOut,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatch,
)
from app.tokens.principal import Principal, Scope, Visible
from app.web.auth import authenticate, principal_named
from app.web.deps import ResourcesDep

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PAGE_SIZE = 50
OVERVIEW_ROWS = 20
AGING_ROWS = 100
"""Open registrations the Aging page lists (overdue first, longest waiting first)."""
AGING_CHART_ROWS = 30
WAITING_STATUSES = ("PENDING", "PENDING_ATTACHMENTS")
"""Registrations waiting on the customer's action."""
SUCCESS_RATE_WINDOW = 100
"""A subscription's success rate is over its newest deliveries: what the first page of
`GET /v1/subscriptions/{id}/deliveries?limit=100` lists."""
HIDDEN_HEADERS = frozenset({"authorization", "x-sinch-signature", "cookie"})
"""Kept headers whose values a page does not show."""

SECURITY_HEADERS = {
    # Only the console's own stylesheet; no script at all; forms post only here; never framed.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class UnreadableInput(Exception):
    """A path or query parameter with a control character (a NUL, ...): no page takes one."""


def _readable(request: Request) -> None:
    """Every console route's first dependency: the path and the query parameters (decoded) hold
    no control character, else `UnreadableInput` (400). PostgreSQL refuses a NUL in text, so one
    reaching a query was a 500 with the SQL logged; nothing valid has one."""
    texts = [request.scope["path"], *request.query_params.keys(), *request.query_params.values()]
    if any(_CONTROL.search(text) for text in texts):
        raise UnreadableInput


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

router = APIRouter(prefix="/console", include_in_schema=False, dependencies=[Depends(_readable)])


@functools.cache
def _templates() -> Jinja2Templates:
    """Built on first use (no work at import); the templates are part of the package."""
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["ago"] = _ago
    environment.filters["when"] = present.when
    environment.filters["money"] = present.money
    environment.filters["tone"] = present.tone
    environment.filters["plain"] = present.plain
    environment.filters["duration"] = present.duration
    environment.filters["share"] = present.share
    return Jinja2Templates(env=environment)


class SignInRequired(Exception):
    """No session, an expired one, or one whose principal no longer exists."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks at a page: the principal as it stands now, and the session's CSRF token."""

    principal: Principal
    csrf: str
    session_id: str
    project: str | None = None
    """The project switcher's choice (`?project=`), None: every project the token sees."""
    projects: tuple[str, ...] = ()
    """The projects the token sees, for the switcher."""

    @property
    def may_act(self) -> bool:
        return self.principal.scope.allows(Scope.WRITE)

    @property
    def visible(self) -> Visible:
        """What the pages list: the switcher's project within the token's limit."""
        return self.principal.visible(self.project)

    @property
    def limit(self) -> Visible:
        """The token's limit: what a page of one row (by id) may show."""
        return self.principal.projects


def _actor(request: Request, who: Viewer) -> Actor:
    """Who acts through a console form, as the audit trail records it (the same as through the
    API: the token's name and the request's addresses)."""
    return Actor.of_request(request, who.principal.name)


async def viewer(request: Request, resources: ResourcesDep) -> Viewer:
    """The signed-in viewer of this request, else `SignInRequired` (a redirect to sign-in)."""
    session_id = request.cookies.get(sessions.SESSION_COOKIE)
    found = await sessions.load(resources.redis, session_id)
    if found is None or session_id is None:
        raise SignInRequired
    principal = await principal_named(resources, found.principal, found.fingerprint)
    if principal is None:  # its token was revoked or replaced: the session ends with it
        await sessions.end(resources.redis, session_id)
        raise SignInRequired
    async with resources.reader() as session:
        projects = tuple(
            p.id for p in await project_queries.list_projects(session, principal.projects)
        )
    return Viewer(
        principal=principal,
        csrf=found.csrf,
        session_id=session_id,
        project=_text(request.query_params.get("project")),
        projects=projects,
    )


ViewerDep = Annotated[Viewer, Depends(viewer)]
CsrfField = Annotated[str | None, Form(alias="csrf")]


def _page(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    response = _templates().TemplateResponse(
        request, template, {"request": request, **context}, status_code=status_code
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def _redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def _refused(request: Request, who: Viewer | None, status_code: int, message: str) -> HTMLResponse:
    # Messages passed on from the API's problems mark names with Markdown backticks: plain here.
    return _page(
        request,
        "refused.html",
        {"viewer": who, "message": present.plain(message)},
        status_code=status_code,
    )


def _acting(request: Request, who: Viewer, presented_csrf: str | None) -> HTMLResponse | None:
    """None when `who` may perform a POSTed action, else the refusal page to answer."""
    if not sessions.same(presented_csrf, who.csrf):
        return _refused(
            request,
            who,
            403,
            "This form is not from this session (its CSRF token is missing "
            "or wrong). Nothing was done; reload the page and try again.",
        )
    if not who.may_act:
        return _refused(
            request,
            who,
            403,
            f"You are signed in with a {who.principal.scope} token: it may look, not act. "
            "Nothing was done.",
        )
    return None


def _text(value: str | None) -> str | None:
    """A form or query field: blank means absent (browsers send empty fields)."""
    if value is None:
        return None
    value = value.strip()
    return value[:MAX_TEXT_LENGTH] or None


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = int((utcnow() - moment).total_seconds())
    if seconds < 0:
        return "in the future"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{seconds} s"


def _with(params: Mapping[str, str | None], **changes: str | None) -> str:
    merged = {**params, **changes}
    return urlencode({k: v for k, v in merged.items() if v})


# --- sign-in and sign-out ------------------------------------------------------------------------


def _set_cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int
) -> None:
    """Every cookie of the console: sent to the console's paths only, never to scripts nor with a
    request from another site, and only over HTTPS when the console is reached over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=sessions.COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _sign_in_page(
    request: Request, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """The sign-in form with a fresh marker, also set as the cookie its POST must come with."""
    marker = sessions.new_secret()
    context = {"viewer": None, "marker": marker} | ({"error": error} if error else {})
    response = _page(request, "sign_in.html", context, status_code=status_code)
    _set_cookie(response, request, sessions.SIGN_IN_COOKIE, marker, max_age=900)
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request) -> HTMLResponse:
    return _sign_in_page(request)


@router.post("/sign-in")
async def sign_in(
    request: Request,
    resources: ResourcesDep,
    token: Annotated[str, Form(max_length=4096)] = "",
    marker: Annotated[str | None, Form()] = None,
) -> Response:
    expected = request.cookies.get(sessions.SIGN_IN_COOKIE)
    if expected is None or not sessions.same(marker, expected):
        return _refused(
            request,
            None,
            403,
            "This sign-in form is not from this site or has expired. Open the sign-in page again.",
        )
    principal = await authenticate(resources, token) if token else None
    if principal is None:
        return _sign_in_page(request, error="That token is not accepted.", status_code=401)
    lifetime = resources.settings.console_session_seconds
    session_id = await sessions.create(resources.redis, principal.name, token, lifetime)
    log.info("console sign-in", extra={"principal": principal.name})
    signed_in = _redirect("/console")
    _set_cookie(signed_in, request, sessions.SESSION_COOKIE, session_id, max_age=lifetime)
    signed_in.delete_cookie(sessions.SIGN_IN_COOKIE, path=sessions.COOKIE_PATH)
    return signed_in


@router.post("/sign-out")
async def sign_out(
    request: Request, resources: ResourcesDep, who: ViewerDep, csrf: CsrfField = None
) -> Response:
    if not sessions.same(csrf, who.csrf):
        return _refused(request, who, 403, "This form is not from this session. Still signed in.")
    await sessions.end(resources.redis, who.session_id)
    response = _redirect("/console/sign-in")
    response.delete_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH)
    return response


# --- overview ------------------------------------------------------------------------------------


@router.get("")
async def overview(request: Request, resources: ResourcesDep, who: ViewerDep) -> HTMLResponse:
    now = utcnow()
    async with resources.reader() as session:
        counts = await counts_service.read(session, now, projects=who.visible)
        waiting = await registration_queries.waiting(
            session, WAITING_STATUSES, OVERVIEW_ROWS, who.visible
        )
        failed = await event_queries.list_events(
            session,
            event_queries.EventFilters(state=EventState.FAILED, projects=who.visible),
            before=None,
            limit=OVERVIEW_ROWS,
        )
        failing = [
            row for row in await _subscription_rows(session, who, resources.settings) if row.failing
        ]
    hours = counts.hours
    return _page(
        request,
        "overview.html",
        {
            "viewer": who,
            "counts": counts,
            "statuses_chart": charts.bars(
                list(counts.registrations_by_status.items()), title="Registrations by status"
            ),
            "states_chart": charts.bars(
                list(counts.events_by_state.items()), title="Events by state"
            ),
            "received_chart": charts.columns(
                [(h.start, h.received) for h in hours], title="Callbacks kept per hour"
            ),
            "finished_chart": charts.columns(
                [(h.start, h.finished) for h in hours], title="Events processed per hour"
            ),
            "lag_chart": charts.columns(
                [(h.start, h.mean_lag_seconds) for h in hours],
                title="Mean processing lag per hour",
                unit=" s",
            ),
            "received_24h": sum(h.received for h in hours),
            "finished_24h": sum(h.finished for h in hours),
            "waiting": [RegistrationOut.model_validate(r) for r in waiting],
            "waiting_count": sum(
                counts.registrations_by_status.get(s, 0) for s in WAITING_STATUSES
            ),
            "failed": [EventOut.of(e) for e in failed],
            "failing_subscriptions": failing,
            "failing_alert_minutes": resources.settings.subscription_failing_alert_minutes,
            "success_rate_window": SUCCESS_RATE_WINDOW,
        },
    )


# --- aging ---------------------------------------------------------------------------------------


@router.get("/aging")
async def aging(request: Request, resources: ResourcesDep, who: ViewerDep) -> HTMLResponse:
    """Open registrations by their wait on Sinch against their market's p50 and p85, overdue
    first, and the time-in-state figures per market: all read from the forecasts read model."""
    async with resources.reader() as session:
        waiting = await forecast_queries.aging(session, AGING_ROWS)
        curves = await forecast_queries.decisions(session, forecast_queries.StatsFilters())
        month = await forecast_queries.window(session, None)
        figures = await forecast_queries.figures(session, forecast_queries.StatsFilters(), month)
    by_market = {(c.project_id, c.market_code, c.registration_type): c for c in curves}

    def age(row: forecast_queries.Aging) -> charts.Age:
        f = row.forecast
        curve = by_market.get((f.project_id, f.market_code, f.registration_type))
        known = curve is not None and curve.samples >= MIN_SAMPLES
        name = (row.sender_ids or [row.forecast.registration_id])[0]
        return charts.Age(
            label=f"{row.forecast.market_code or '?'} {name}",
            seconds=row.forecast.sinch_seconds,
            p50=curve.p50 if known and curve is not None else None,
            p85=curve.p85 if known and curve is not None else None,
            overdue=row.forecast.overdue,
        )

    return _page(
        request,
        "aging.html",
        {
            "viewer": who,
            "waiting": waiting,
            "overdue_count": sum(1 for row in waiting if row.forecast.overdue),
            "chart": charts.ages(
                [age(row) for row in waiting[:AGING_CHART_ROWS]],
                title="Open registrations: wait on Sinch against the market's p50 and p85",
            ),
            "curves": curves,
            "figures": figures,
            "since": month,
            "min_samples": MIN_SAMPLES,
        },
    )


# --- registrations -------------------------------------------------------------------------------


@router.get("/registrations")
async def registrations(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    q: str | None = None,
    status: str | None = None,
    registration_type: Annotated[str | None, Query(alias="type")] = None,
    sender_id: str | None = None,
    market: str | None = None,
    tag: str | None = None,
    cursor: str | None = None,
) -> Response:
    params = {
        "status": _text(status),
        "type": _text(registration_type),
        "sender_id": _text(sender_id),
        "market": _text(market),
        "tag": _text(tag),
        "project": who.project,
    }
    search = _text(q)
    async with resources.reader() as session:
        if search is not None:
            # An id opens its page; anything else is looked up as a sender ID.
            if await registration_queries.get_registration(session, search, who.limit):
                return _redirect(f"/console/registrations/{_path(search)}")
            params["sender_id"] = search
        filters = registration_queries.RegistrationFilters(
            statuses=tuple(s.strip() for s in (params["status"] or "").split(",") if s.strip()),
            registration_type=params["type"],
            sender_id=params["sender_id"],
            market_code=params["market"],
            tags=tuple(t.strip() for t in (params["tag"] or "").split(",") if t.strip()),
            newest_first=True,  # an operator looks for what moved last
            projects=who.visible,
        )
        try:
            after = optional_cursor(_text(cursor), registration_queries.NewestKey)
        except ProblemError:
            return _refused(request, who, 400, "That page link is not valid any more.")
        rows = await registration_queries.list_registrations(
            session, filters, after=after, limit=PAGE_SIZE + 1
        )
        counts = await counts_service.read(session, utcnow(), projects=who.visible)
    items, next_cursor = page(rows, PAGE_SIZE, lambda r: registration_queries.key_of(filters, r))
    return _page(
        request,
        "registrations.html",
        {
            "viewer": who,
            "params": params,
            "search": search,
            "items": [RegistrationOut.model_validate(r) for r in items],
            "next_link": _with(params, cursor=next_cursor) if next_cursor else None,
            "known_statuses": list(counts.registrations_by_status),
        },
    )


def _path(value: str) -> str:
    return quote(value, safe="")


@router.get("/registrations/{registration_id:path}")
async def registration(
    request: Request, resources: ResourcesDep, who: ViewerDep, registration_id: str
) -> HTMLResponse:
    async with resources.reader() as session:
        row = await registration_queries.get_registration(session, registration_id, who.limit)
        if row is None:
            return _refused(request, who, 404, "No registration with this id is known here.")
        history = await registration_queries.history(session, registration_id)
        events = await event_queries.list_events(
            session,
            event_queries.EventFilters(registration_id=registration_id, projects=who.limit),
            before=None,
            limit=PAGE_SIZE,
        )
        forecasts = await forecast_queries.forecasts_of(session, [registration_id])
    answer = RegistrationOut.of(row, forecasts.get(registration_id))
    kept = answer.reason
    reason = present.explaining_reason(
        answer.status,
        row.sinch,
        Reason(message=kept.message, state=kept.state, at=kept.at) if kept else None,
    )
    event_rows = {e.event_id: e.id for e in events if e.event_id}
    return _page(
        request,
        "registration.html",
        {
            "viewer": who,
            "registration": answer,
            "reason": reason,
            "history": [HistoryItem.model_validate(h) for h in history],
            "event_rows": event_rows,
            "events": [EventOut.of(e) for e in events],
            "sinch_document": json.dumps(row.sinch, indent=2, sort_keys=True)
            if row.sinch is not None
            else None,
            "refreshed": request.query_params.get("refreshed") == "1",
        },
    )


@router.post("/registrations/{registration_id:path}/refresh")
async def refresh(
    request: Request,
    resources: ResourcesDep,
    sequencer: SequencerDep,
    who: ViewerDep,
    registration_id: str,
    csrf: CsrfField = None,
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    if who.limit is not None:
        async with resources.reader() as session:
            if not await registration_queries.get_registration(session, registration_id, who.limit):
                return _refused(request, who, 404, "No registration with this id is known here.")
    try:
        await registration_service.refresh(
            resources.sessionmaker,
            resources.sinch,
            sequencer,
            registration_id,
            actor=_actor(request, who),
        )
    except ProblemError as exc:
        return _refused(request, who, exc.status, f"Refresh failed: {exc.detail or exc.title}")
    return _redirect(f"/console/registrations/{_path(registration_id)}?refreshed=1")


# --- events --------------------------------------------------------------------------------------


@router.get("/events")
async def events(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    state: str | None = None,
    outcome: str | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    chosen = _text(state)
    if chosen is not None and chosen not in {s.value for s in EventState}:
        return _refused(request, who, 400, "No such event state.")
    params = {"state": chosen, "outcome": _text(outcome), "project": who.project}
    filters = event_queries.EventFilters(
        state=EventState(chosen) if chosen else None,
        outcome=params["outcome"],
        projects=who.visible,
    )
    try:
        before = optional_cursor(_text(cursor), event_queries.EventKey)
    except ProblemError:
        return _refused(request, who, 400, "That page link is not valid any more.")
    async with resources.reader() as session:
        rows = await event_queries.list_events(session, filters, before=before, limit=PAGE_SIZE + 1)
        counts = await counts_service.read(session, utcnow(), projects=who.visible)
    items, next_cursor = page(rows, PAGE_SIZE, event_queries.key_of)
    return _page(
        request,
        "events.html",
        {
            "viewer": who,
            "params": params,
            "states": [s.value for s in EventState],
            "items": [EventOut.of(e) for e in items],
            "next_link": _with(params, cursor=next_cursor) if next_cursor else None,
            "failed_count": counts.events_by_state[EventState.FAILED.value],
        },
    )


@router.get("/events/replay-failed")
async def confirm_replay_failed(
    request: Request, resources: ResourcesDep, who: ViewerDep
) -> HTMLResponse:
    async with resources.reader() as session:
        counts = await counts_service.read(session, utcnow(), projects=who.visible)
    return _page(
        request,
        "replay_failed.html",
        {"viewer": who, "failed_count": counts.events_by_state[EventState.FAILED.value]},
    )


@router.post("/events/replay-failed")
async def replay_failed(
    request: Request, resources: ResourcesDep, who: ViewerDep, csrf: CsrfField = None
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    report = await event_service.replay_failed(
        resources.sessionmaker, resources.redis, actor=_actor(request, who), visible=who.limit
    )
    return _page(
        request,
        "done.html",
        {
            "viewer": who,
            "message": f"{len(report.replayed)} failed events were put back to received and "
            "queued for processing."
            + (
                f" Redis refused {report.not_enqueued}; the worker's sweep queues them."
                if report.not_enqueued
                else ""
            ),
            "back": "/console/events?state=received",
        },
    )


@router.get("/events/{row_id}")
async def event(request: Request, resources: ResourcesDep, who: ViewerDep, row_id: int) -> Response:
    if not 1 <= row_id <= event_queries.MAX_ROW_ID:
        return _refused(request, who, 404, "No event with this id is kept.")
    async with resources.reader() as session:
        row = await event_queries.get_raw_event(session, row_id, who.limit)
    if row is None:
        return _refused(request, who, 404, "No event with this id is kept.")
    try:
        body = json.dumps(json.loads(row.body), indent=2, sort_keys=True, ensure_ascii=False)
        body_is_json = True
    except (ValueError, UnicodeDecodeError):
        body = row.body.decode("utf-8", errors="replace")
        body_is_json = False
    headers = [
        (name, "(hidden)" if name.lower() in HIDDEN_HEADERS else str(value))
        for name, value in sorted((row.headers or {}).items())
    ]
    return _page(
        request,
        "event.html",
        {
            "viewer": who,
            "event": EventOut.of(row),
            "body": body,
            "body_is_json": body_is_json,
            "headers": headers,
            "replayed": request.query_params.get("replayed") == "1",
        },
    )


@router.post("/events/{row_id}/replay")
async def replay(
    request: Request, resources: ResourcesDep, who: ViewerDep, row_id: int, csrf: CsrfField = None
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    if not 1 <= row_id <= event_queries.MAX_ROW_ID:
        return _refused(request, who, 404, "No event with this id is kept.")
    if who.limit is not None:
        async with resources.reader() as session:
            if await event_queries.get_event(session, row_id, who.limit) is None:
                return _refused(request, who, 404, "No event with this id is kept.")
    if (
        await event_service.replay_event(
            resources.sessionmaker, resources.redis, row_id, actor=_actor(request, who)
        )
        is None
    ):
        return _refused(request, who, 404, "No event with this id is kept.")
    return _redirect(f"/console/events/{row_id}?replayed=1")


# --- subscriptions -------------------------------------------------------------------------------


AUDIT_PAGE_SIZE = 100


@router.get("/audit")
async def audit(request: Request, resources: ResourcesDep, who: ViewerDep) -> HTMLResponse:
    """The newest entries of the audit trail; `write` scope, as `GET /v1/audit`."""
    if not who.may_act:
        return _refused(
            request, who, 403, "The audit trail is shown to write tokens only, as in the API."
        )
    async with resources.reader() as session:
        entries = await audit_queries.recent(session, limit=AUDIT_PAGE_SIZE, projects=who.visible)
    return _page(
        request, "audit.html", {"viewer": who, "entries": entries, "limit": AUDIT_PAGE_SIZE}
    )


@router.get("/subscriptions")
async def subscriptions(request: Request, resources: ResourcesDep, who: ViewerDep) -> HTMLResponse:
    async with resources.reader() as session:
        rows = await _subscription_rows(session, who, resources.settings)
    return _page(request, "subscriptions.html", {"viewer": who, "rows": rows})


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


async def _subscription_rows(
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


@router.get("/subscriptions/{subscription_id}")
async def subscription(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    cursor: str | None = None,
) -> Response:
    try:
        before = optional_cursor(_text(cursor), event_queries.EventKey)
    except ProblemError:
        return _refused(request, who, 400, "That page link is not valid any more.")
    async with resources.reader() as session:
        found = await subscription_service.visible(session, subscription_id, who.limit)
        if found is None:
            return _refused(request, who, 404, "No subscription with this id.")
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
    return _page(
        request,
        "subscription.html",
        {
            "viewer": who,
            "subscription": answer,
            "items": items,
            "next_link": _with({}, cursor=next_cursor) if next_cursor else None,
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


DONE_NOTES = {"saved": "Saved.", "disabled": "Disabled: nothing is sent until it is enabled."}


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


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    delivery_id: int,
    subscription_id: Annotated[str, Form(max_length=40)] = "",
    csrf: CsrfField = None,
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    if not 1 <= delivery_id <= 2**62 or await subscription_service.retry_deliveries(
        resources.sessionmaker,
        resources.redis,
        [delivery_id],
        actor=_actor(request, who),
        limit=who.limit,
    ):
        return _refused(request, who, 404, "No delivery with this id.")
    back = f"/console/subscriptions/{_path(subscription_id)}" if subscription_id else "/console"
    return _redirect(f"{back}?retried={delivery_id}")


# --- projects ------------------------------------------------------------------------------------


@router.get("/projects")
async def projects(request: Request, resources: ResourcesDep, who: ViewerDep) -> HTMLResponse:
    """Every project (never a secret); with a write token, forms to add, rename, remove."""
    async with resources.reader() as session:
        found = await project_queries.list_projects(
            session, environment_secret=resources.settings.sinch_key_secret is not None
        )
    return _page(
        request,
        "projects.html",
        {"viewer": who, "projects": found, "note": _text(request.query_params.get("note"))},
    )


_PROJECT_NOTES = {
    "added": "Project added: every API and worker process serves it within seconds.",
    "renamed": "Project renamed.",
    "removed": "Project removed: its callbacks are refused (404) within seconds.",
}


async def _project_write(
    request: Request, resources: ResourcesDep, who: Viewer, csrf: str | None, write: Any, done: str
) -> Response:
    """Run `write(session, actor, now)` in a transaction when `who` may act; a refusal of the
    service (`ProjectRefused`, `SecretsKeyMissing`, ...) is the refusal page, nothing changed."""
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    try:
        async with resources.sessionmaker.begin() as session:
            await write(session, _actor(request, who), utcnow())
    except (project_service.ProjectRefused, SecretsKeyMissing, WrongSecretsKey) as exc:
        return _refused(request, who, 409, f"{exc}. Nothing was changed.")
    return _redirect("/console/projects?" + urlencode({"note": _PROJECT_NOTES[done]}))


@router.post("/projects")
async def add_project(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    project_id: Annotated[str, Form()],
    key_id: Annotated[str, Form()],
    key_secret: Annotated[SecretStr, Form()],
    callback_secret: Annotated[SecretStr, Form()],
    name: Annotated[str | None, Form()] = None,
    csrf: CsrfField = None,
) -> Response:
    async def write(session: AsyncSession, actor: Actor, now: datetime) -> None:
        await project_service.add_project(
            session,
            box_of(resources.settings.project_secrets_key),
            project_id=project_id.strip(),
            name=_text(name) or project_id.strip(),
            key_id=key_id,
            key_secret=key_secret,
            callback_secret=callback_secret,
            actor=actor,
            now=now,
        )

    return await _project_write(request, resources, who, csrf, write, "added")


@router.post("/projects/{project_id}/rename")
async def rename_project(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    project_id: str,
    name: Annotated[str, Form()],
    csrf: CsrfField = None,
) -> Response:
    async def write(session: AsyncSession, actor: Actor, now: datetime) -> None:
        await project_service.rename_project(session, project_id, name, actor=actor, now=now)

    return await _project_write(request, resources, who, csrf, write, "renamed")


@router.post("/projects/{project_id}/remove")
async def remove_project(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    project_id: str,
    with_data: Annotated[str | None, Form()] = None,
    csrf: CsrfField = None,
) -> Response:
    async def write(session: AsyncSession, actor: Actor, now: datetime) -> None:
        await project_service.remove_project(
            session,
            project_id,
            with_data=bool(with_data),
            actor=actor,
            settings_project_id=resources.settings.settings_project_id,
            now=now,
        )

    return await _project_write(request, resources, who, csrf, write, "removed")


# --- managing subscriptions ----------------------------------------------------------------------
# Each action calls the same service function as the API's route (audited there); forms post
# text, so lists are comma-separated and a blank field means "every value".

ATTEMPTS_SHOWN = 20
"""Attempts on a subscription's page; its attempts page pages through the rest."""


def _list(text: str | None) -> list[str] | None:
    """A comma-separated form field as a filter: None when blank (every value)."""
    values = [value.strip() for value in (text or "").split(",") if value.strip()]
    return values or None


def _invalid(request: Request, who: Viewer, exc: ValidationError) -> HTMLResponse:
    """A form the API's own model refuses: say which field, never echo the value."""
    fields = sorted({".".join(str(part) for part in error["loc"][:1]) for error in exc.errors()})
    return _refused(request, who, 422, f"Not saved: check {', '.join(fields)}.")


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
) -> SubscriptionFields:
    return SubscriptionFields(
        url=(url or "").strip() or None,
        values={
            "description": _text(description),
            "statuses": _list(statuses),
            "registration_types": _list(registration_types),
            "kinds": _list(kinds),
        },
    )


SubscriptionFormDep = Annotated[SubscriptionFields, Depends(_subscription_fields)]


@router.post("/subscriptions")
async def create_subscription(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    form: SubscriptionFormDep,
    csrf: CsrfField = None,
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    try:
        body = SubscriptionIn(url=form.url or "", **form.values)
        created = await subscription_service.subscribe(
            resources.sessionmaker,
            body,
            allowed_hosts=resources.settings.subscription_allowed_hosts,
            actor=_actor(request, who),
            limit=who.limit,
        )
    except ValidationError as exc:
        return _invalid(request, who, exc)
    except UrlRefused as exc:
        return _refused(request, who, 422, f"The URL is refused: {exc}")
    return _secret_page(request, who, created, "Subscription created.")


def _secret_page(
    request: Request, who: Viewer, subscription: Subscription, message: str
) -> HTMLResponse:
    """The one time a secret is shown (after creating or rotating), like the API's answer."""
    return _page(
        request,
        "secret.html",
        {
            "viewer": who,
            "message": message,
            "subscription": subscription_service.answer(subscription),
            "secret": subscription.secret,
        },
    )


@router.post("/subscriptions/{subscription_id}/edit")
async def edit_subscription(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    form: SubscriptionFormDep,
    csrf: CsrfField = None,
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    try:
        # Every field of the form is given (set, even when blank): a blank filter means every
        # value again, a blank description none; a blank URL leaves the URL as it is.
        url = {"url": form.url} if form.url else {}
        body = SubscriptionPatch(**form.values, **url)
        changed = await subscription_service.edit(
            resources.sessionmaker,
            resources.redis,
            subscription_id,
            body,
            allowed_hosts=resources.settings.subscription_allowed_hosts,
            actor=_actor(request, who),
            limit=who.limit,
        )
    except ValidationError as exc:
        return _invalid(request, who, exc)
    except UrlRefused as exc:
        return _refused(request, who, 422, f"The URL is refused: {exc}")
    if changed is None:
        return _refused(request, who, 404, "No subscription with this id.")
    return _redirect(f"/console/subscriptions/{_path(subscription_id)}?done=saved")


@router.post("/subscriptions/{subscription_id}/disable")
async def disable_subscription(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    csrf: CsrfField = None,
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    changed = await subscription_service.edit(
        resources.sessionmaker,
        resources.redis,
        subscription_id,
        SubscriptionPatch(enabled=False),
        allowed_hosts=resources.settings.subscription_allowed_hosts,
        actor=_actor(request, who),
        limit=who.limit,
    )
    if changed is None:
        return _refused(request, who, 404, "No subscription with this id.")
    return _redirect(f"/console/subscriptions/{_path(subscription_id)}?done=disabled")


@router.post("/subscriptions/{subscription_id}/enable")
async def enable_subscription(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    backlog: Annotated[str | None, Form()] = None,
    csrf: CsrfField = None,
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    found = await subscription_service.enable(
        resources.sessionmaker,
        resources.redis,
        subscription_id,
        backlog=backlog == "yes",
        actor=_actor(request, who),
        limit=who.limit,
    )
    if isinstance(found, subscription_service.Refused):
        return _recovery_refused(request, who, found)
    message = (
        f"Enabled again with its backlog: {found.retried} failed deliveries go out again."
        if backlog == "yes"
        else f"Enabled again without its backlog: {found.skipped} pending deliveries skipped."
    )
    return _done(request, who, message, f"/console/subscriptions/{_path(subscription_id)}")


def _done(request: Request, who: Viewer, message: str, back: str) -> HTMLResponse:
    return _page(request, "done.html", {"viewer": who, "message": message, "back": back})


def _recovery_refused(
    request: Request, who: Viewer, refused: subscription_service.Refused
) -> HTMLResponse:
    if refused is subscription_service.Refused.UNKNOWN:
        return _refused(request, who, 404, "No subscription with this id.")
    if refused is subscription_service.Refused.DISABLED:
        return _refused(
            request, who, 409, "This subscription is disabled: enable it with its backlog."
        )
    return _refused(request, who, 409, "This subscription is enabled already.")


@router.post("/subscriptions/{subscription_id}/rotate-secret")
async def rotate_subscription_secret(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    csrf: CsrfField = None,
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    rotated = await subscription_service.rotate_secret(
        resources.sessionmaker, subscription_id, actor=_actor(request, who), limit=who.limit
    )
    if rotated is None:
        return _refused(request, who, 404, "No subscription with this id.")
    until = present.when(rotated.previous_secret_until)
    return _secret_page(
        request,
        who,
        rotated,
        f"A new signing secret. Deliveries are signed with the old one too until {until}: "
        "give the receiver the new one before then.",
    )


@router.post("/subscriptions/{subscription_id}/test")
async def send_test_event(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    csrf: CsrfField = None,
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    outcome = await subscription_service.ping(
        resources.sessionmaker,
        subscription_id,
        resources.settings,
        actor=_actor(request, who),
        limit=who.limit,
    )
    if outcome is None:
        return _refused(request, who, 404, "No subscription with this id.")
    return _page(
        request,
        "ping.html",
        {"viewer": who, "subscription_id": subscription_id, "outcome": outcome},
    )


def _since(text: str | None) -> datetime | None:
    """A `datetime-local` field (or ISO 8601) as a UTC time; None when blank or unreadable."""
    try:
        moment = datetime.fromisoformat((text or "").strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _retry_failed(
    request: Request,
    resources: ResourcesDep,
    who: Viewer,
    subscription_id: str,
    since: datetime | None,
    *,
    dry_run: bool,
) -> int | HTMLResponse:
    """The count (dry) or the retry of the failed deliveries since `since`, else the refusal
    page to answer."""
    if since is None:
        return _refused(request, who, 400, "Say since when (a date and time, UTC).")
    count = await subscription_service.retry_failed(
        resources.sessionmaker,
        resources.redis,
        subscription_id,
        since=since,
        dry_run=dry_run,
        actor=_actor(request, who),
        limit=who.limit,
    )
    if isinstance(count, subscription_service.Refused):
        return _recovery_refused(request, who, count)
    return count


@router.get("/subscriptions/{subscription_id}/retry-failed")
async def confirm_retry_failed(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    since: str | None = None,
) -> Response:
    moment = _since(since)
    count = await _retry_failed(request, resources, who, subscription_id, moment, dry_run=True)
    if not isinstance(count, int):
        return count
    return _page(
        request,
        "retry_failed.html",
        {"viewer": who, "subscription_id": subscription_id, "since": moment, "count": count},
    )


@router.post("/subscriptions/{subscription_id}/retry-failed")
async def retry_failed(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    since: Annotated[str | None, Form()] = None,
    csrf: CsrfField = None,
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    moment = _since(since)
    count = await _retry_failed(request, resources, who, subscription_id, moment, dry_run=False)
    if not isinstance(count, int):
        return count
    return _done(
        request,
        who,
        f"{count} failed deliveries since {present.when(moment)} are pending again, sent now "
        "in change order.",
        f"/console/subscriptions/{_path(subscription_id)}",
    )


@router.post("/subscriptions/{subscription_id}/delete")
async def delete_subscription(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    subscription_id: str,
    confirm: Annotated[str | None, Form()] = None,
    csrf: CsrfField = None,
) -> Response:
    refused = _acting(request, who, csrf)
    if refused is not None:
        return refused
    if confirm != subscription_id:
        return _refused(request, who, 400, "Not deleted: type the subscription's id to confirm.")
    if not await subscription_service.remove(
        resources.sessionmaker, subscription_id, actor=_actor(request, who), limit=who.limit
    ):
        return _refused(request, who, 404, "No subscription with this id.")
    return _done(
        request,
        who,
        f"Subscription {subscription_id} is deleted, with its deliveries and their attempts.",
        "/console/subscriptions",
    )


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
        before = optional_cursor(_text(cursor), subscription_queries.AttemptKey)
        chosen = AttemptOutcome(outcome) if outcome else None
    except (ProblemError, ValueError):
        return _refused(request, who, 400, "That page link is not valid any more.")
    async with resources.reader() as session:
        found = await subscription_service.visible(session, subscription_id, who.limit)
        if found is None:
            return _refused(request, who, 404, "No subscription with this id.")
        filters = subscription_queries.AttemptFilters(
            subscription_id=subscription_id, outcome=chosen
        )
        rows = await subscription_queries.attempts(
            session, filters, limit=PAGE_SIZE + 1, before=before
        )
    items, next_cursor = page(rows, PAGE_SIZE, subscription_queries.key_of)
    params = {"outcome": chosen.value if chosen else None}
    return _page(
        request,
        "attempts.html",
        {
            "viewer": who,
            "subscription": subscription_service.answer(found, redact=not who.may_act),
            "attempts": items,
            "outcome": chosen.value if chosen else "",
            "next_link": _with(params, cursor=next_cursor) if next_cursor else None,
        },
    )


# --- installation --------------------------------------------------------------------------------


def install_console(app: FastAPI) -> None:
    """Add the console's pages, its static files and its sign-in redirect to `app`."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    async def to_sign_in(request: Request, _exc: Exception) -> Response:
        response = _redirect("/console/sign-in")
        response.delete_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH)
        return response

    app.add_exception_handler(SignInRequired, to_sign_in)

    async def unreadable(request: Request, _exc: Exception) -> Response:
        return _refused(
            request,
            None,
            400,
            "This address holds a character no page takes (a control "
            "character). Nothing was looked up.",
        )

    app.add_exception_handler(UnreadableInput, unreadable)
