"""Applying what we learn to the local copy, with the recency guard. Runs inside the caller's
transaction; never commits and never calls the network.

Recency per registration: callbacks are ordered among themselves by the Sinch time they claim
(`status_changed_at` holds the newest one applied), but a hint never outranks the truth. A snapshot
(a GET) shows everything Sinch did before the fetch began, so it wins over every callback applied
before that moment, whatever time the callback claimed; between two snapshots the later fetch wins.
Only a callback applied after the fetch began can keep its status against a snapshot, and only when
it claims a Sinch time no earlier than the document's `updateTime`. The row lock makes the check
and the write one step, whichever process gets there first.

A snapshot also sets the registration facts (app/registrations/facts.py): the document's, with the
market of its policy when the document names none (app/registrations/markets.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.actions import Action
from app.audit.repository import Actor, record
from app.changes import repository as changes
from app.changes.sequencer import Sequencer
from app.core.db import utcnow
from app.core.models import FACT_COLUMNS, ChangeKind, HistorySource, Registration
from app.core.problems import ProblemError
from app.registrations import markets, queries, repository
from app.registrations.facts import fact_columns, read_facts
from app.sinch.client import SinchClient
from app.sinch.errors import SinchError, SinchNotFoundError, SinchRetryableError
from app.sinch.schemas import SinchRegistration

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    applied: bool
    """False when the registration already holds newer news (a later fetch, or a callback applied
    after this fetch began that claims a later time than the document)."""
    status_changed: bool
    overruled: bool = False
    """True when the snapshot corrected a status that a callback had set."""


def snapshot_wins(
    *,
    fetched_at: datetime,
    update_time: datetime | None,
    last_synced_at: datetime | None,
    callback_applied_at: datetime | None,
    status_changed_at: datetime | None,
) -> bool:
    """Whether a snapshot fetched at `fetched_at` (our clock) with Sinch's `update_time` replaces
    the local registration. Pure; the rule is the module's docstring."""
    if last_synced_at is not None and fetched_at < last_synced_at:
        return False  # a later fetch was applied already
    if callback_applied_at is None or callback_applied_at <= fetched_at:
        return True  # every callback applied so far happened before Sinch answered this fetch
    # Whole seconds on both sides: an equal time cannot tell which came first, and the callback,
    # delivered while the GET ran, is the likelier news.
    return (
        update_time is not None
        and status_changed_at is not None
        and update_time > status_changed_at
    )


_ANSWER_COLUMNS = ("status", "registration_type", *FACT_COLUMNS, "status_since")


def _answer(registration: Registration) -> tuple[object, ...]:
    """What a change of the feed is about: the status and the facts (not the sync times)."""
    return tuple(getattr(registration, name) for name in _ANSWER_COLUMNS)


class ProjectMismatch(Exception):
    """A snapshot fetched for one project names a registration kept for another."""

    def __init__(self, registration_id: str, kept_for: str, fetched_for: str) -> None:
        super().__init__(
            f"registration {registration_id} belongs to project {kept_for}, not to {fetched_for}"
        )


def overrule_note(status: str, claimed_at: datetime | None) -> str:
    """The history note of a snapshot that corrects a status a callback had set."""
    claimed = claimed_at.isoformat() if claimed_at is not None else "no time"
    return f"Sinch's document overruled a callback that said {status} at {claimed}"


async def apply_snapshot(
    session: AsyncSession,
    snapshot: SinchRegistration,
    *,
    project_id: str,
    source: HistorySource,
    fetched_at: datetime,
    now: datetime,
    event_id: str | None = None,
) -> SnapshotResult:
    """Make the local registration say what Sinch's document says, unless we hold newer news.

    `project_id` is the project whose credentials fetched `snapshot`: a new registration belongs
    to it; a known registration of another project raises `ProjectMismatch` (nothing written),
    since no project's data may be written from another's answers.

    `event_id` is the Sinch event id of the callback this snapshot checks (history rows name it);
    None for a refresh or reconciliation.

    `fetched_at` is when the GET (or the listing) that answered `snapshot` began, on our clock; it
    becomes `last_synced_at`. The snapshot's Sinch time is its `updateTime` (`fetched_at` when Sinch
    gives none). A status change adds a history row; one that corrects a callback's status says so
    in its note. The same status only refreshes the document and the times. A document applied
    that differs from the last one kept becomes the registration's next version
    (`registration_versions`); one not applied (older news) is not kept.
    """
    at = snapshot.update_time or fetched_at
    document = snapshot.raw
    facts = read_facts(document)
    market_code = facts.market_code or await markets.market_of(session, facts.policy_id)
    columns = fact_columns(facts, market_code)
    values = {
        "id": snapshot.id,
        "project_id": project_id,
        "status": snapshot.status,
        "registration_type": snapshot.registration_type,
        "status_changed_at": at,
        "status_since": at,
        "last_synced_at": fetched_at,
        "sinch": document,
        "created_at": now,
        "updated_at": now,
        **columns,
    }

    async def keep_version() -> None:
        """The document as the registration's next version (when it differs from the last)."""
        await repository.keep_version(
            session,
            registration_id=snapshot.id,
            project_id=project_id,
            document=document,
            source=source,
            at=at,
            now=now,
        )

    def add_history(*, from_status: str | None, note: str | None = None) -> None:
        """The history row of this snapshot's move from `from_status` to its status."""
        repository.add_history(
            session,
            registration_id=snapshot.id,
            project_id=project_id,
            from_status=from_status,
            to_status=snapshot.status,
            at=at,
            source=source,
            event_id=event_id,
            recorded_at=now,
            note=note,
        )

    async def record_change(kind: ChangeKind, *, from_status: str | None) -> None:
        """The feed's change of this snapshot's registration, in this transaction."""
        await changes.record(
            session,
            [snapshot.id],
            kind=kind,
            from_status=from_status,
            at=at,
            source=source,
            now=now,
        )

    # The registration is usually known: lock it first (one statement), insert only when absent.
    registration = await repository.lock(session, snapshot.id)
    if registration is None:
        if await repository.insert_if_absent(session, values):
            await repository.replace_lookups(
                session, snapshot.id, sender_ids=facts.sender_ids, tags=facts.tags, fresh=True
            )
            await record_change(ChangeKind.STATUS, from_status=None)
            add_history(from_status=None)
            await keep_version()
            return SnapshotResult(applied=True, status_changed=True)
        # Another transaction inserted it meanwhile: wait for its commit, then judge as usual.
        registration = await repository.lock(session, snapshot.id)
        if registration is None:  # deleted between the two statements: nothing to guard against
            raise RuntimeError(f"registration {snapshot.id} vanished while being written")
    if registration.project_id != project_id:
        raise ProjectMismatch(snapshot.id, registration.project_id, project_id)
    if not snapshot_wins(
        fetched_at=fetched_at,
        update_time=snapshot.update_time,
        last_synced_at=registration.last_synced_at,
        callback_applied_at=registration.callback_applied_at,
        status_changed_at=registration.status_changed_at,
    ):
        return SnapshotResult(applied=False, status_changed=False)

    before = _answer(registration)
    changed = registration.status != snapshot.status
    # A callback's claim outranked by the document: the hint set a status Sinch does not confirm.
    overruled = changed and (
        registration.status_changed_at is not None and at < registration.status_changed_at
    )
    if changed:
        add_history(
            from_status=registration.status,
            note=overrule_note(registration.status, registration.status_changed_at)
            if overruled
            else None,
        )
    if registration.sender_ids != columns["sender_ids"] or registration.tags != columns["tags"]:
        await repository.replace_lookups(
            session, registration.id, sender_ids=facts.sender_ids, tags=facts.tags
        )
    from_status = registration.status
    repository.record_snapshot(
        registration,
        status=snapshot.status,
        at=at,
        registration_type=snapshot.registration_type,
        document=document,
        facts=columns,
        fetched_at=fetched_at,
        now=now,
    )
    await keep_version()
    if _answer(registration) != before:  # the feed records what a reader can see change
        await record_change(
            ChangeKind.STATUS if changed else ChangeKind.DETAILS, from_status=from_status
        )
    return SnapshotResult(applied=True, status_changed=changed, overruled=overruled)


async def apply_answer(
    session: AsyncSession,
    sinch: SinchClient,
    snapshot: SinchRegistration,
    *,
    source: HistorySource,
    fetched_at: datetime,
) -> SnapshotResult:
    """`apply_snapshot` for what `sinch` answered to a request sent at `fetched_at`, with the
    clock now: the registration is `sinch`'s project's. The one way a project's client's answer
    is applied (a refresh, the facts job), so that none can name another project for it."""
    return await apply_snapshot(
        session,
        snapshot,
        project_id=sinch.project_id,
        source=source,
        fetched_at=fetched_at,
        now=utcnow(),
    )


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession],
    sinch: SinchClient | None,
    sequencer: Sequencer,
    registration_id: str,
    *,
    actor: Actor,
) -> Registration:
    """GET the registration from Sinch now and apply it (the recency guard keeps newer local
    news); answers the registration as kept afterwards. The one implementation of a refresh: the
    API and the console come here, audited as `actor` in the same transaction. Owns its
    transaction, begun only after the GET, so no database lock is held across the network call;
    pokes `sequencer` after the commit, so that what changed goes on the feed. `sinch` is None
    when the credentials are not configured.

    Raises `ProblemError`: 503 (no credentials, Sinch unavailable), 404 (Sinch has no such
    registration), 502 (Sinch's answer unusable). Its details never echo Sinch's answer.
    """
    if sinch is None:
        raise ProblemError(503, "Sinch credentials not configured.")
    fetched_at = utcnow()
    snapshot = await _fetch(sinch, registration_id)
    async with sessionmaker.begin() as session:
        await apply_answer(
            session, sinch, snapshot, source=HistorySource.REFETCH, fetched_at=fetched_at
        )
        registration = await queries.get_registration(session, registration_id)
        if registration is None:  # applied just above; only a concurrent delete could do this
            raise ProblemError(404, "No registration with this id is known here.")
        record(
            session,
            actor,
            Action.REGISTRATION_REFRESH,
            registration_id,
            now=utcnow(),
            project_id=registration.project_id,
        )
    sequencer.poke()  # what the refresh changed goes on the feed
    log.info("registration refreshed", extra={"registration_id": registration_id})
    return registration


async def _fetch(sinch: SinchClient, registration_id: str) -> SinchRegistration:
    """GET the registration from Sinch, every failure turned into its problem answer.

    The Sinch client's messages hold no secret, but they are still not echoed: they name Sinch's
    URLs and statuses, which are none of the caller's business beyond "unavailable".
    """
    try:
        snapshot = await sinch.get_registration(registration_id)
    except SinchNotFoundError:
        raise ProblemError(404, "Sinch has no registration with this id.") from None
    except SinchRetryableError as exc:
        log.warning(
            "refresh: Sinch unavailable (%s)",
            exc.status_code or "no answer",
            extra={"registration_id": registration_id},
        )
        headers = (
            {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
            if exc.retry_after is not None
            else None
        )
        raise ProblemError(503, "Sinch is unavailable; try again later.", headers=headers) from None
    except SinchError as exc:
        log.warning(
            "refresh: Sinch answer unusable (%s)",
            type(exc).__name__,
            extra={"registration_id": registration_id},
        )
        raise ProblemError(502, "Sinch answered something this service cannot use.") from None
    return snapshot
