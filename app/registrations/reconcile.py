"""Reconciliation: learn from Sinch what changed, so a callback that never came is caught too.

Lists the registrations updated at Sinch since the stored watermark (minus an overlap: Sinch's
`updateTime` has whole seconds, `updateDateFrom` may be read as a date, and clocks drift), applies
each as a snapshot with the recency guard, then advances the watermark to the time the run started.
Without a watermark (or with `full=True`) it imports everything: that is how a new deployment
learns the registrations that exist before any callback arrives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import HistorySource
from app.registrations import repository
from app.registrations.service import apply_snapshot
from app.sinch.client import SinchClient

log = logging.getLogger(__name__)

WATERMARK = "reconcile_watermark"
OVERLAP = timedelta(minutes=10)
# Sinch lists one type per request, ALPHANUMERIC_SENDER_ID unless told (docs/sinch.md).
REGISTRATION_TYPES = ("ALPHANUMERIC_SENDER_ID", "LONG_NUMBER", "SHORT_CODE", "RCS_AGENT")


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    seen: int
    changed: int
    since: datetime | None
    watermark: datetime


async def reconcile(
    sessionmaker: async_sessionmaker[AsyncSession], sinch: SinchClient, *, full: bool = False
) -> ReconcileReport:
    """Apply every registration Sinch changed since the watermark. Each one is its own short
    transaction; the watermark moves only once every page was read and applied. Works for the
    project of `sinch` (its watermark, its registrations)."""
    project_id = sinch.project_id
    started = utcnow()
    async with sessionmaker() as session:
        watermark = None if full else await repository.get_mark(session, project_id, WATERMARK)
    since = watermark - OVERLAP if watermark is not None else None

    seen = changed = 0
    for registration_type in REGISTRATION_TYPES:
        async for snapshot in sinch.list_registrations(
            update_date_from=since, registration_type=registration_type
        ):
            seen += 1
            async with sessionmaker.begin() as session:
                # The page's fetch began after `started`: the run's start is a safe (early) bound.
                result = await apply_snapshot(
                    session,
                    snapshot,
                    project_id=project_id,
                    source=HistorySource.RECONCILE,
                    fetched_at=started,
                    now=utcnow(),
                )
            changed += result.status_changed

    async with sessionmaker.begin() as session:
        await repository.set_mark(session, project_id, WATERMARK, started, now=utcnow())
    log.info(
        "reconciled",
        extra={"seen": seen, "changed": changed, "since": since.isoformat() if since else "start"},
    )
    return ReconcileReport(seen=seen, changed=changed, since=since, watermark=started)
