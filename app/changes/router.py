"""The change feed (`/v1/changes`): a long-poll page and a Server-Sent Events stream. HTTP only.

Both read numbered changes after a cursor (the `seq` of the last change read, as text) and, when
there is nothing new, wait for `ChangeSignal` (app/changes/signal.py) rather than polling the
database. A database session is taken per read, never held across a wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Address

from app.changes import queries, service
from app.changes.live import FeedDep, SignalDep
from app.changes.schemas import ChangePage
from app.changes.service import FeedReader
from app.changes.signal import ChangeSignal
from app.core.pagination import DEFAULT_LIMIT, LimitQuery
from app.core.problems import ProblemError
from app.core.schemas import operation
from app.tokens.principal import Visible
from app.web.auth import VisibleDep, api_router
from app.web.deps import ResourcesDep

log = logging.getLogger(__name__)

router = api_router("/v1/changes", "changes", errors=(410,))

MAX_WAIT_SECONDS = 30
LATEST = "latest"
CURSOR_PATTERN = rf"^([0-9]{{1,18}}|{LATEST})$"
CURSOR_DESCRIPTION = (
    "Where to read from: `nextCursor` of the page before (or an SSE `id`). Omitted: from the "
    f"oldest change kept. `{LATEST}`: after the newest change (to follow only what comes next, "
    "e.g. right before listing /v1/registrations to resynchronise)."
)
GONE = (
    "The cursor is older than the changes kept (CHANGE_RETENTION_DAYS). Resynchronise: take "
    f"`cursor={LATEST}` from this feed, list /v1/registrations again, then follow the feed from "
    "that cursor."
)

BEYOND = (
    "The cursor is beyond the newest change: this feed never gave it (was the database "
    f"restored?). Resynchronise: take `cursor={LATEST}`, list /v1/registrations again, then "
    "follow the feed from that cursor."
)

CursorQuery = Annotated[
    str | None,
    Query(max_length=18, pattern=CURSOR_PATTERN, description=CURSOR_DESCRIPTION),
]


@dataclass(frozen=True)
class PollAsked:
    """What a long poll of the feed asks for (its query, in this order in the OpenAPI document):
    where to read from, how many changes at most, and how long to wait for news."""

    cursor: CursorQuery = None
    limit: LimitQuery = DEFAULT_LIMIT
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait for news (0-30)."),
    ] = 0


PollDep = Annotated[PollAsked, Depends()]


async def _start(reader: async_sessionmaker[AsyncSession], cursor: str | None) -> int:
    """The `seq` to read after, for `cursor`; 410 when it names a position no longer kept. A
    session of `reader` only for the bounds: none is held while the route waits."""
    async with reader() as session:
        bounds = await queries.bounds(session)
    if cursor is None:
        return bounds.oldest - 1 if bounds.oldest is not None else 0
    if cursor == LATEST:
        return bounds.newest or 0
    after = int(cursor)
    if bounds.oldest is not None and after < bounds.oldest - 1:
        raise ProblemError(410, GONE)
    if after > (bounds.newest or 0):
        # Beyond any number given: the database was restored, or the cursor is made up.
        raise ProblemError(410, BEYOND)
    return after


@router.get(
    "",
    response_model=ChangePage,
    **operation(
        "listChanges",
        "Changes of registrations, oldest first, after a cursor",
        description="Every change of a registration's answer (its status or a fact), in the "
        "order the changes became visible (`seq`). With `wait`, a request that finds nothing new "
        "is held until a change comes or `wait` seconds pass; `items` may then be empty and "
        "`nextCursor` is the position given. With `projectId`, or a token limited to projects, "
        "only those projects' changes: a page may then hold fewer than `limit` items, and "
        "`nextCursor` moves past the other projects' changes it skipped.",
    ),
)
async def list_changes(
    resources: ResourcesDep, signal: SignalDep, feed: FeedDep, asked: PollDep, projects: VisibleDep
) -> Response:
    after = await _start(resources.reader, asked.cursor)
    deadline = time.monotonic() + asked.wait
    while True:
        token = signal.token()
        try:
            page = await feed.page(after=after, limit=asked.limit)
        except service.FeedGone:
            raise ProblemError(410, GONE) from None
        if page:
            after = page[-1].seq
        items = service.shown(page, projects)
        left = deadline - time.monotonic()
        if items or left <= 0:
            break
        if not page:  # else: only other projects' changes were read; read on, no wait
            await signal.wait(token, left)
    # The items are JSON already (made once per change and process: service.FeedReader).
    joined = ",".join(item.json for item in items)
    return Response(f'{{"items":[{joined}],"nextCursor":"{after}"}}', media_type="application/json")


async def _stream_start(
    resources: ResourcesDep,
    cursor: CursorQuery = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=18,
            pattern=CURSOR_PATTERN,
            description="The `id` of the last event received (sent by EventSource on reconnect).",
        ),
    ] = None,
) -> int:
    # A dependency: it runs before the stream's 200 is sent, so an old cursor can still be 410.
    return await _start(resources.reader, last_event_id or cursor)


PING_SECONDS = 15.0
PING = b": ping\n\n"


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    **operation(
        "streamChanges",
        "Changes of registrations as Server-Sent Events",
        description="The items of GET /v1/changes as events: `id` is the cursor after the item, "
        "`event: change`, `data` the item. Resumes after the `Last-Event-ID` header (or `cursor`); "
        "a comment line comes at least every 15 seconds.",
    ),
)
async def stream_changes(
    request: Request,
    signal: SignalDep,
    feed: FeedDep,
    projects: VisibleDep,
    after: Annotated[int, Depends(_stream_start)],
) -> StreamingResponse:
    # Our own stream, not FastAPI's generator endpoints (`EventSourceResponse`): theirs logged two
    # ERROR tracebacks (an ExceptionGroup of anyio.BrokenResourceError) whenever a client left
    # while an event was buffered (issue 24, 6). Here a client leaving cancels the generator
    # (or closes it) and that is one info line.
    return StreamingResponse(
        _events(signal, feed, after, projects, request.client),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    signal: ChangeSignal,
    feed: FeedReader,
    after: int,
    projects: Visible,
    client: Address | None,
) -> AsyncIterator[bytes]:
    """The stream's bytes: each change after `after` of `projects` (None: every project) as an
    event, a comment line when nothing
    was sent for `PING_SECONDS`; ends (the client reconnects, then gets 410 with the way back)
    when the reader fell behind the retention. No session is held while waiting."""
    sent = after
    ended = "the client left"
    quiet_since = time.monotonic()
    try:
        while True:
            token = signal.token()
            try:
                page = await feed.page(after=sent, limit=service.BATCH)
            except service.FeedGone:
                ended = "it fell behind the retention"
                return
            for seq, _, item in service.shown(page, projects):
                yield f"id: {seq}\nevent: change\ndata: {item}\n\n".encode()
                quiet_since = time.monotonic()
            if page:
                sent = page[-1].seq
                continue
            # The signal may wake without a change for this feed: ping by the clock.
            left = quiet_since + PING_SECONDS - time.monotonic()
            if left <= 0:
                yield PING
                quiet_since = time.monotonic()
            else:
                await signal.wait(token, left)
    finally:
        log.info(
            "change stream ended: %s",
            ended,
            extra={"after": sent, "client": client.host if client else None},
        )
