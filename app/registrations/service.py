"""Applying what we learn to the local copy, with the recency guard. Runs inside the caller's
transaction; never commits and never calls the network.

Recency is monotonic per registration: `status_changed_at` holds Sinch's time of the newest
information applied, and nothing older than it overwrites the registration, whichever process gets
there first (the row lock makes the check and the write one step).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import HistorySource
from app.registrations import repository
from app.sinch.schemas import SinchRegistration


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    applied: bool
    """False when the snapshot was older than what the registration already holds."""
    status_changed: bool


async def apply_snapshot(
    session: AsyncSession,
    snapshot: SinchRegistration,
    *,
    source: HistorySource,
    event_id: str | None,
    now: datetime,
) -> SnapshotResult:
    """Make the local registration say what Sinch's document says, unless we hold newer news.

    The snapshot's time is its `updateTime` (the fetch time when Sinch gives none). A status change
    adds a history row; the same status only refreshes the document and `last_synced_at`.
    """
    at = snapshot.update_time or now
    values = {
        "id": snapshot.id,
        "status": snapshot.status,
        "registration_type": snapshot.registration_type,
        "status_changed_at": at,
        "last_synced_at": now,
        "sinch": snapshot.raw,
        "created_at": now,
        "updated_at": now,
    }
    if await repository.insert_if_absent(session, values):
        repository.add_history(
            session,
            registration_id=snapshot.id,
            from_status=None,
            to_status=snapshot.status,
            at=at,
            source=source,
            event_id=event_id,
            recorded_at=now,
        )
        return SnapshotResult(applied=True, status_changed=True)

    registration = await repository.lock(session, snapshot.id)
    if registration is None:  # deleted between the two statements: nothing to guard against
        raise RuntimeError(f"registration {snapshot.id} vanished while being written")
    if registration.status_changed_at is not None and at < registration.status_changed_at:
        return SnapshotResult(applied=False, status_changed=False)

    changed = registration.status != snapshot.status
    if changed:
        repository.add_history(
            session,
            registration_id=registration.id,
            from_status=registration.status,
            to_status=snapshot.status,
            at=at,
            source=source,
            event_id=event_id,
            recorded_at=now,
        )
        registration.status = snapshot.status
    registration.status_changed_at = at
    registration.registration_type = snapshot.registration_type or registration.registration_type
    registration.sinch = snapshot.raw
    registration.last_synced_at = now
    registration.updated_at = now
    return SnapshotResult(applied=True, status_changed=changed)
