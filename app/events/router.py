"""Internal API over kept callback events (`/v1/events`). HTTP only: parse, call, answer."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Path, Query

from app.core.models import EventState
from app.core.problems import found
from app.core.schemas import operation, text_filter
from app.events import queries, service
from app.events.schemas import EventOut, EventPage
from app.web.auth import ActorDep, LimitDep, VisibleDep, api_router
from app.web.deps import ReadSessionDep, ResourcesDep
from app.web.pages import RowIdPageDep

log = logging.getLogger(__name__)

router = api_router("/v1/events", "events")

EventRowId = Annotated[
    int,
    Path(alias="id", ge=1, le=queries.MAX_ROW_ID, description="The event's `id` (not `eventId`)."),
]

_NOT_FOUND = "No event with this id is kept."


@router.get("", **operation("listEvents", "List kept callback events, newest first"))
async def list_events(
    session: ReadSessionDep,
    asked: RowIdPageDep,
    projects: VisibleDep,
    state: Annotated[EventState | None, Query(description="Only events in this state.")] = None,
    registration_id: Annotated[
        str | None,
        text_filter("Only events about this registration.", alias="registrationId"),
    ] = None,
    outcome: Annotated[
        str | None,
        text_filter("Only events that ended with this outcome (e.g. `failed:rejected`)."),
    ] = None,
) -> EventPage:
    filters = queries.EventFilters(
        state=state, registration_id=registration_id, outcome=outcome, projects=projects
    )
    before = asked.after(queries.EventKey)
    rows = await queries.list_events(session, filters, before=before, limit=asked.limit + 1)
    items, next_cursor = asked.split(rows, queries.key_of)
    return EventPage(items=[EventOut.of(row) for row in items], next_cursor=next_cursor)


@router.get(
    "/{id}", **operation("getEvent", "One kept callback event (without its body and headers)", 404)
)
async def get_event(session: ReadSessionDep, limit: LimitDep, row_id: EventRowId) -> EventOut:
    return EventOut.of(found(await queries.get_event(session, row_id, limit), _NOT_FOUND))


@router.post(
    "/{id}/replay",
    status_code=202,
    **operation(
        "replayEvent",
        "Process the event again",
        403,
        404,
        description="Puts the event back to `received` and queues its processing. Answers 202 even "
        "when the queue cannot be reached: the worker's sweep picks up `received` events.",
    ),
)
async def replay_event(
    resources: ResourcesDep, row_id: EventRowId, actor: ActorDep, limit: LimitDep
) -> EventOut:
    if limit is not None:
        async with resources.reader() as session:
            found(await queries.get_event(session, row_id, limit), _NOT_FOUND)
    event = await service.replay_event(resources.sessionmaker, resources.redis, row_id, actor=actor)
    return EventOut.of(found(event, _NOT_FOUND))
