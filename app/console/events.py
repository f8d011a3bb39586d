"""The console's events (callbacks kept): the list by state and outcome, one event's page (its
body and headers, credentials hidden), and replaying one or every failed event."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.console.access import ActingDep, ViewerDep
from app.console.pages import PAGE_SIZE, STALE_LINK, Refusal, next_link, page, redirect, text
from app.core.db import utcnow
from app.core.models import EventState
from app.core.pagination import optional_cursor
from app.core.pagination import page as paged
from app.core.problems import ProblemError
from app.counts import service as counts_service
from app.events import queries as event_queries
from app.events import service as event_service
from app.events.schemas import EventOut
from app.tokens.principal import Visible
from app.web.deps import ResourcesDep

router = APIRouter(prefix="/console")

HIDDEN_HEADERS = frozenset({"authorization", "x-sinch-signature", "cookie"})
"""Kept headers whose values a page does not show."""
UNKNOWN = "No event with this id is kept."


async def _failed_count(session: AsyncSession, visible: Visible) -> int:
    """Failed events among those `visible`, as `GET /v1/counts` counts them."""
    counts = await counts_service.read(session, utcnow(), projects=visible)
    return counts.events_by_state[EventState.FAILED.value]


@router.get("/events")
async def events(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    state: str | None = None,
    outcome: str | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    chosen = text(state)
    if chosen is not None and chosen not in {s.value for s in EventState}:
        raise Refusal(who, 400, "No such event state.")
    params = {"state": chosen, "outcome": text(outcome), "project": who.project}
    filters = event_queries.EventFilters(
        state=EventState(chosen) if chosen else None,
        outcome=params["outcome"],
        projects=who.visible,
    )
    try:
        before = optional_cursor(text(cursor), event_queries.EventKey)
    except ProblemError:
        raise Refusal(who, 400, STALE_LINK) from None
    async with resources.reader() as session:
        rows = await event_queries.list_events(session, filters, before=before, limit=PAGE_SIZE + 1)
        failed_count = await _failed_count(session, who.visible)
    items, next_cursor = paged(rows, PAGE_SIZE, event_queries.key_of)
    return page(
        request,
        "events.html",
        {
            "viewer": who,
            "params": params,
            "states": [s.value for s in EventState],
            "items": [EventOut.of(e) for e in items],
            "next_link": next_link(params, next_cursor),
            "failed_count": failed_count,
        },
    )


@router.get("/events/replay-failed")
async def confirm_replay_failed(
    request: Request, resources: ResourcesDep, who: ViewerDep
) -> HTMLResponse:
    async with resources.reader() as session:
        failed_count = await _failed_count(session, who.visible)
    return page(request, "replay_failed.html", {"viewer": who, "failed_count": failed_count})


@router.post("/events/replay-failed")
async def replay_failed(request: Request, resources: ResourcesDep, acting: ActingDep) -> Response:
    report = await event_service.replay_failed(
        resources.sessionmaker, resources.redis, actor=acting.actor, visible=acting.who.limit
    )
    return page(
        request,
        "done.html",
        {
            "viewer": acting.who,
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
        raise Refusal(who, 404, UNKNOWN)
    async with resources.reader() as session:
        row = await event_queries.get_raw_event(session, row_id, who.limit)
    if row is None:
        raise Refusal(who, 404, UNKNOWN)
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
    return page(
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
async def replay(resources: ResourcesDep, acting: ActingDep, row_id: int) -> Response:
    who = acting.who
    if not 1 <= row_id <= event_queries.MAX_ROW_ID:
        raise Refusal(who, 404, UNKNOWN)
    if who.limit is not None:
        async with resources.reader() as session:
            if await event_queries.get_event(session, row_id, who.limit) is None:
                raise Refusal(who, 404, UNKNOWN)
    if (
        await event_service.replay_event(
            resources.sessionmaker, resources.redis, row_id, actor=acting.actor
        )
        is None
    ):
        raise Refusal(who, 404, UNKNOWN)
    return redirect(f"/console/events/{row_id}?replayed=1")
