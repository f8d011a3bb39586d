"""The console's registrations: the list with its search and filters, one registration's page
(its history, the versions of Sinch's document and what changed between them, its events, the
document) and its refresh from Sinch; while it is PENDING, the form that answers Sinch (the
policy's fields prefilled from the document, app/console/registration_writes.py) and its
update; where its policy defines attachments, their list with Sinch's uploads, each one's
download and upload (app/console/attachments.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.background import BackgroundTask

from app.changes.live import SequencerDep
from app.console import attachments, present, registration_form
from app.console.access import ActingDep, ViewerDep
from app.console.pages import (
    PAGE_SIZE,
    SECURITY_HEADERS,
    STALE_LINK,
    Refusal,
    next_link,
    page,
    path,
    redirect,
    text,
)
from app.console.registration_writes import (
    FormState,
    WriterDep,
    policy_of,
    posted,
    said,
    shown,
)
from app.console.viewer import Viewer
from app.core.db import utcnow
from app.core.models import Registration
from app.core.pagination import optional_cursor
from app.core.pagination import page as paged
from app.core.problems import ProblemError
from app.counts import service as counts_service
from app.events import queries as event_queries
from app.events.schemas import EventOut
from app.forecasts import queries as forecast_queries
from app.projects.clients import ProjectClientsDep
from app.registrations import queries as registration_queries
from app.registrations import service as registration_service
from app.registrations.facts import Reason
from app.registrations.schemas import HistoryItem, RegistrationOut, VersionItem
from app.sinch.client import SinchClient
from app.submissions import service as submissions
from app.web.deps import ResourcesDep

router = APIRouter(prefix="/console")

UNKNOWN = "No registration with this id is known here."
NO_POLICY = (
    "This project's catalog has no policy for this registration, so its form cannot be made: "
    "refresh the catalog (python -m app catalog refresh)."
)
FIXABLE = frozenset({"PENDING"})
"""The states whose page offers the form that answers Sinch (the update path)."""
DONE = {
    "updated": "Sent to Sinch: the registration is updated.",
    "submitted": "Submitted to Sinch.",
    "attached": "Sent to Sinch: the attachment is uploaded.",
}
NO_CLIENT = "Project {} has no usable Sinch credentials here (see `project show`)."


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _filters(
    status: str | None = None,
    registration_type: Annotated[str | None, Query(alias="type")] = None,
    sender_id: str | None = None,
    market: str | None = None,
    tag: str | None = None,
) -> dict[str, str | None]:
    """The list's filters as its form sends them (blank: not asked), by their names in the
    page's links."""
    return {
        "status": text(status),
        "type": text(registration_type),
        "sender_id": text(sender_id),
        "market": text(market),
        "tag": text(tag),
    }


@router.get("/registrations")
async def registrations(
    request: Request,
    resources: ResourcesDep,
    who: ViewerDep,
    filtered: Annotated[dict[str, str | None], Depends(_filters)],
    q: str | None = None,
    cursor: str | None = None,
) -> Response:
    params = {**filtered, "project": who.project}
    search = text(q)
    async with resources.reader() as session:
        if search is not None:
            # An id opens its page; anything else is looked up as a sender ID.
            if await registration_queries.get_registration(session, search, who.limit):
                return redirect(f"/console/registrations/{path(search)}")
            params["sender_id"] = search
        filters = registration_queries.RegistrationFilters(
            statuses=_split(params["status"]),
            registration_type=params["type"],
            sender_id=params["sender_id"],
            market_code=params["market"],
            tags=_split(params["tag"]),
            newest_first=True,  # an operator looks for what moved last
            projects=who.visible,
        )
        try:
            after = optional_cursor(text(cursor), registration_queries.NewestKey)
        except ProblemError:
            raise Refusal(who, 400, STALE_LINK) from None
        rows = await registration_queries.list_registrations(
            session, filters, after=after, limit=PAGE_SIZE + 1
        )
        counts = await counts_service.read(session, utcnow(), projects=who.visible)
    items, next_cursor = paged(rows, PAGE_SIZE, lambda r: registration_queries.key_of(filters, r))
    return page(
        request,
        "registrations.html",
        {
            "viewer": who,
            "params": params,
            "search": search,
            "items": [RegistrationOut.model_validate(r) for r in items],
            "next_link": next_link(params, next_cursor),
            "known_statuses": list(counts.registrations_by_status),
        },
    )


@router.get("/registrations/{registration_id:path}/attachments/{attachment_id}")
async def download(
    resources: ResourcesDep,
    clients: ProjectClientsDep,
    who: ViewerDep,
    registration_id: str,
    attachment_id: str,
) -> StreamingResponse:
    """The attachment as Sinch keeps it (`open_attachment`, as the API's download), streamed,
    always as a download (`attachments.disposition`). Declared before the page's route, whose
    path would take this one."""
    async with resources.reader() as session:
        row = await _visible(session, who, registration_id)
    sinch = await clients.client(row.project_id)
    if sinch is None:
        raise Refusal(who, 503, NO_CLIENT.format(row.project_id))
    try:
        download = await submissions.download(sinch, registration_id, attachment_id)
    except ProblemError as exc:
        raise Refusal(who, exc.status, f"Download failed: {exc.detail or exc.title}") from None
    given = download.headers
    headers = {
        **SECURITY_HEADERS,
        "Content-Type": given.get("content-type") or "application/octet-stream",
        "Content-Disposition": attachments.disposition(given.get("content-disposition")),
    }
    return StreamingResponse(
        download.chunks, headers=headers, background=BackgroundTask(download.close)
    )


async def _visible(session: AsyncSession, who: Viewer, registration_id: str) -> Registration:
    """The registration, when `who` may see it; else the 404 page (as for one not known here)."""
    row = await registration_queries.get_registration(session, registration_id, who.limit)
    if row is None:
        raise Refusal(who, 404, UNKNOWN)
    return row


@router.get("/registrations/{registration_id:path}")
async def registration(
    request: Request, resources: ResourcesDep, who: ViewerDep, registration_id: str
) -> HTMLResponse:
    return await _registration_page(request, resources, who, registration_id)


async def _registration_page(
    request: Request,
    resources: ResourcesDep,
    who: Viewer,
    registration_id: str,
    *,
    fix: FormState | None = None,
    refused: tuple[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """One registration's page; `fix`: the update form as posted (with its errors), else the
    form prefilled from the document, shown while the registration is PENDING; `refused`: an
    upload just refused (attachment id, why), shown beside its form (the refusal page when the
    policy lists no such attachment)."""
    async with resources.reader() as session:
        row = await _visible(session, who, registration_id)
        history = await registration_queries.history(session, registration_id)
        versions = await registration_queries.newest_versions(session, registration_id, PAGE_SIZE)
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
    policy = await policy_of(resources, row.project_id, row.policy_id)
    policy_known = fix is not None or policy is not None
    if fix is None and who.may_act and answer.status in FIXABLE and policy is not None:
        fix = shown(policy, registration_form.values_of(row.sinch))
    listed = attachments.listed(policy.document if policy else None, row.sinch, refused)
    if refused and all(a.id != refused[0] for a in listed):
        raise Refusal(who, status_code, refused[1])
    return page(
        request,
        "registration.html",
        {
            "viewer": who,
            "registration": answer,
            "reason": reason,
            "history": [HistoryItem.model_validate(h) for h in history],
            "versions": [VersionItem.of(v) for v in reversed(versions)],
            "more_versions": bool(versions) and versions[0].version > 1,
            "event_rows": event_rows,
            "events": [EventOut.of(e) for e in events],
            "sinch_document": json.dumps(row.sinch, indent=2, sort_keys=True)
            if row.sinch is not None
            else None,
            "refreshed": request.query_params.get("refreshed") == "1",
            "done": DONE.get(request.query_params.get("done") or ""),
            "fix": fix,
            "fixable": answer.status in FIXABLE,
            "policy_known": policy_known,
            "attachments": listed,
            "uploadable": answer.status not in attachments.NOT_UPLOADABLE,
            "attachment_max_bytes": resources.settings.attachment_max_bytes,
        },
        status_code=status_code,
    )


@router.post("/registrations/{registration_id:path}/update")
async def update(request: Request, writer: WriterDep, registration_id: str) -> Response:
    """The fix form of a PENDING registration: checked like `?validateOnly=true`, then sent
    through `app.submissions.service.update` (the API's `PUT`), audited as the console's user."""
    resources, who = writer.resources, writer.acting.who
    async with resources.reader() as session:
        row = await _visible(session, who, registration_id)
    policy = await policy_of(resources, row.project_id, row.policy_id)
    if policy is None:
        raise Refusal(who, 404, f"{NO_POLICY} Nothing was sent.")

    async def send(sinch: SinchClient, body: dict[str, Any]) -> Registration:
        return await submissions.update(
            resources.sessionmaker, sinch, registration_id, body, actor=writer.acting.actor
        )

    values = await posted(request)
    outcome = await writer.check_and_send(row.project_id, policy, values, send)
    if isinstance(outcome, FormState):
        return await _registration_page(
            request, resources, who, registration_id, fix=outcome, status_code=422
        )
    return writer.written(f"/console/registrations/{path(registration_id)}?done=updated")


@router.post("/registrations/{registration_id:path}/attachments/{attachment_id}")
async def upload(
    request: Request, writer: WriterDep, registration_id: str, attachment_id: str
) -> Response:
    """An attachment's upload form: checked as the API's upload is (`check_attachment`: the
    size cap, an attachment the policy defines, its MIME types), then sent through `attach`,
    audited as the console's user. A refusal is the page again with the reason beside the form
    (nothing sent); a success, the page as kept now."""
    resources, who = writer.resources, writer.acting.who
    upload = await attachments.posted_upload(request, attachment_id)
    async with resources.reader() as session:
        row = await _visible(session, who, registration_id)
        try:
            await submissions.check_attachment(
                session,
                row,
                attachment_id,
                upload,
                max_bytes=resources.settings.attachment_max_bytes,
            )
        except ProblemError as exc:
            checked: ProblemError | None = exc
        else:
            checked = None
    if checked is not None:
        refused = (attachment_id, attachments.refusal_of(checked))
        return await _registration_page(
            request, resources, who, registration_id, refused=refused, status_code=checked.status
        )
    try:
        sinch = await writer.clients.client(row.project_id)
        if sinch is None:
            raise ProblemError(503, NO_CLIENT.format(row.project_id) + " Nothing was sent.")
        await submissions.attach(
            resources.sessionmaker,
            sinch,
            registration_id,
            attachment_id,
            upload,
            actor=writer.acting.actor,
        )
    except ProblemError as exc:
        return await _registration_page(
            request,
            resources,
            who,
            registration_id,
            refused=(attachment_id, said(exc)),
            status_code=exc.status,
        )
    return writer.written(f"/console/registrations/{path(registration_id)}?done=attached")


@router.post("/registrations/{registration_id:path}/refresh")
async def refresh(
    resources: ResourcesDep,
    sequencer: SequencerDep,
    acting: ActingDep,
    registration_id: str,
) -> Response:
    who = acting.who
    if who.limit is not None:
        async with resources.reader() as session:
            await _visible(session, who, registration_id)
    try:
        await registration_service.refresh(
            resources.sessionmaker,
            resources.sinch,
            sequencer,
            registration_id,
            actor=acting.actor,
        )
    except ProblemError as exc:
        raise Refusal(who, exc.status, f"Refresh failed: {exc.detail or exc.title}") from None
    return redirect(f"/console/registrations/{path(registration_id)}?refreshed=1")
