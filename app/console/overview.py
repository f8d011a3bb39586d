"""The console's overview (`/console`): counts, charts of the last 24 hours, what waits on the
customer, failed events and failing subscriptions; and the audit trail (`/console/audit`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.audit import queries as audit_queries
from app.console import charts
from app.console.access import ViewerDep
from app.console.pages import Refusal, page
from app.console.subscriptions import SUCCESS_RATE_WINDOW, subscription_rows
from app.core.db import utcnow
from app.core.models import EventState
from app.counts import service as counts_service
from app.events import queries as event_queries
from app.events.schemas import EventOut
from app.registrations import queries as registration_queries
from app.registrations.schemas import RegistrationOut
from app.web.deps import ResourcesDep

router = APIRouter(prefix="/console")

OVERVIEW_ROWS = 20
WAITING_STATUSES = ("PENDING", "PENDING_ATTACHMENTS")
"""Registrations waiting on the customer's action."""
AUDIT_PAGE_SIZE = 100


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
            row for row in await subscription_rows(session, who, resources.settings) if row.failing
        ]
    hours = counts.hours
    return page(
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


@router.get("/audit")
async def audit(request: Request, resources: ResourcesDep, who: ViewerDep) -> HTMLResponse:
    """The newest entries of the audit trail; `write` scope, as `GET /v1/audit`."""
    if not who.may_act:
        raise Refusal(who, 403, "The audit trail is shown to write tokens only, as in the API.")
    async with resources.reader() as session:
        entries = await audit_queries.recent(session, limit=AUDIT_PAGE_SIZE, projects=who.visible)
    return page(
        request, "audit.html", {"viewer": who, "entries": entries, "limit": AUDIT_PAGE_SIZE}
    )
