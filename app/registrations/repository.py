"""The one module that writes `registrations`, `registration_history`, `registration_versions`
(and the worker's named marks in `sync_state`). Nothing here commits: callers own the transaction.

Locking: `lock()` takes the registration's row lock (`SELECT ... FOR UPDATE`).

A trusted callback's writes are Core statements built once (building a statement per event costs
more than running it), given as CTEs (`callback_writes_as_ctes`) that app/events/processing.py
joins with the event's own write into the one statement of a trusted apply. Parameters:
p_registration, p_from (the status as read), p_read_at and p_read_synced (its `status_changed_at`
and `last_synced_at` as read), p_to, p_at (the event's time), p_event (Sinch's event id, or None),
p_comment (the callback's comments, or None), p_facts_due (p_now when the registration must be
fetched for its facts, else None), p_now.

The registration facts (app/registrations/facts.py) are written here too: a snapshot sets them all
(`record_snapshot`, `replace_lookups`); a trusted callback sets `status_since` and, with comments,
the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    String,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.diff import digest
from app.changes import repository as changes
from app.core.db import UTCDateTime
from app.core.models import (
    MARKET_POLICIES,
    REGISTRATION_HISTORY,
    REGISTRATION_SENDER_IDS,
    REGISTRATION_TAGS,
    REGISTRATION_VERSIONS,
    REGISTRATIONS,
    SYNC_STATE,
    ChangeKind,
    HistorySource,
    Registration,
    RegistrationHistory,
    SyncState,
)
from app.projects.queries import only

_REGISTRATION = bindparam("p_registration", type_=String())
_FROM = bindparam("p_from", type_=String())
_TO = bindparam("p_to", type_=String())
_AT = bindparam("p_at", type_=UTCDateTime())
_EVENT = bindparam("p_event", type_=String())
_NOW = bindparam("p_now", type_=UTCDateTime())
_COMMENT = bindparam("p_comment", type_=Text())
_FACTS_DUE = bindparam("p_facts_due", type_=UTCDateTime())
_KEEP_REASON = _COMMENT.is_(None)

# The registration moves only if it is still as the decision read it: under row locks that always
# holds; on the lock-free way it is the optimistic check (nothing is written when it fails).
MOVE_BY_CALLBACK = (
    update(REGISTRATIONS)
    .where(
        REGISTRATIONS.c.id == _REGISTRATION,
        REGISTRATIONS.c.status == _FROM,
        REGISTRATIONS.c.status_changed_at.is_not_distinct_from(
            bindparam("p_read_at", type_=UTCDateTime())
        ),
        REGISTRATIONS.c.last_synced_at.is_not_distinct_from(
            bindparam("p_read_synced", type_=UTCDateTime())
        ),
    )
    .values(
        status=_TO,
        status_changed_at=_AT,
        callback_applied_at=_NOW,
        updated_at=_NOW,
        status_since=case((REGISTRATIONS.c.status == _TO, REGISTRATIONS.c.status_since), else_=_AT),
        reason_message=func.coalesce(_COMMENT, REGISTRATIONS.c.reason_message),
        reason_state=case((_KEEP_REASON, REGISTRATIONS.c.reason_state), else_=_TO),
        reason_at=case((_KEEP_REASON, REGISTRATIONS.c.reason_at), else_=_AT),
        facts_due_at=func.coalesce(_FACTS_DUE, REGISTRATIONS.c.facts_due_at),
    )
)
_HISTORY_COLUMNS = (
    "registration_id",
    "project_id",
    "from_status",
    "to_status",
    "at",
    "source",
    "event_id",
    "recorded_at",
)
_STATUS_CHANGE = literal(ChangeKind.STATUS.value, String())
_CALLBACK_SOURCE = literal(HistorySource.CALLBACK.value, String())


def callback_writes_as_ctes(when: ColumnElement[bool]) -> tuple[CTE, CTE, CTE]:
    """The trusted callback's writes as CTEs, for one statement with the event's own
    write: `moved` (the moved registration's row, if `when` and the guard held), the history row,
    and the change feed's row for each moved registration (its deliveries are written when the
    change is numbered, after this statement's commit: app/changes/repository.py). The caller adds
    them with `add_cte`."""
    moved = (
        MOVE_BY_CALLBACK.where(when)
        .returning(
            REGISTRATIONS.c.id,
            REGISTRATIONS.c.project_id,
            REGISTRATIONS.c.status,
            *(REGISTRATIONS.c[name] for name in changes.IMAGE_COLUMNS),
        )
        .cte("moved")
    )
    history = (
        insert(REGISTRATION_HISTORY)
        .from_select(
            _HISTORY_COLUMNS,
            select(
                moved.c.id,
                moved.c.project_id,
                _FROM,
                _TO,
                _AT,
                _CALLBACK_SOURCE,
                _EVENT,
                _NOW,
            ),
        )
        .cte("history")
    )
    change = changes.record_from(
        moved,
        kind=_STATUS_CHANGE,
        from_status=_FROM,
        at=_AT,
        source=_CALLBACK_SOURCE,
        now=_NOW,
    ).cte("change")
    return moved, history, change


async def lock(session: AsyncSession, registration_id: str) -> Registration | None:
    """The registration, locked until the transaction ends; None if it is not known."""
    # populate_existing: the SELECT is always sent (it takes the lock), and refreshes the object.
    return await session.get(
        Registration, registration_id, with_for_update=True, populate_existing=True
    )


async def insert_if_absent(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert a registration unless one with its id exists (another process may be inserting it
    at this very moment: the loser of that race sees False and then locks the winner's row)."""
    table = REGISTRATIONS
    statement = (
        postgresql.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(table.c.id)
    )
    result = await session.execute(statement)
    return result.scalar_one_or_none() is not None


def record_snapshot(
    registration: Registration,
    *,
    status: str,
    at: datetime,
    registration_type: str | None,
    document: dict[str, Any],
    facts: dict[str, Any],
    fetched_at: datetime,
    now: datetime,
) -> None:
    """Overwrite the locked `registration` with a snapshot and its `facts` (columns, as
    `facts.fact_columns` gives them), written when the session flushes. `status_since` moves only
    with the status; `facts_due_at` is cleared when this fetch began after it was set."""
    if registration.status != status or registration.status_since is None:
        registration.status_since = at
    registration.status = status
    registration.status_changed_at = at
    registration.registration_type = registration_type or registration.registration_type
    registration.sinch = document
    registration.last_synced_at = fetched_at
    registration.updated_at = now
    for column, value in facts.items():
        setattr(registration, column, value)
    if registration.facts_due_at is not None and registration.facts_due_at <= fetched_at:
        registration.facts_due_at = None


_VERSIONS = REGISTRATION_VERSIONS
_V_REGISTRATION = bindparam("p_registration", type_=String())
_V_DIGEST = bindparam("p_digest", type_=String())
_LAST_KEPT = (
    select(_VERSIONS.c.version, _VERSIONS.c.digest)
    .where(_VERSIONS.c.registration_id == _V_REGISTRATION)
    .order_by(_VERSIONS.c.version.desc())
    .limit(1)
    .subquery("last_kept")
)
# One statement: the next number and the comparison with the last kept digest, so that a document
# equal to the last one adds nothing. Run under the registration's row lock (apply_snapshot), so
# two writers never number the same version.
KEEP_VERSION = insert(_VERSIONS).from_select(
    [
        "registration_id",
        "version",
        "project_id",
        "document",
        "digest",
        "source",
        "at",
        "recorded_at",
    ],
    select(
        _V_REGISTRATION,
        func.coalesce(select(_LAST_KEPT.c.version).scalar_subquery(), 0) + 1,
        bindparam("p_project", type_=String()),
        bindparam("p_document", type_=_VERSIONS.c.document.type),
        _V_DIGEST,
        bindparam("p_source", type_=String()),
        bindparam("p_at", type_=UTCDateTime()),
        bindparam("p_now", type_=UTCDateTime()),
    ).where(select(_LAST_KEPT.c.digest).scalar_subquery().is_distinct_from(_V_DIGEST)),
)


async def keep_version(
    session: AsyncSession,
    *,
    registration_id: str,
    project_id: str,
    document: dict[str, Any],
    source: str,
    at: datetime,
    now: datetime,
) -> None:
    """Keep `document` as the registration's next version, unless it equals (by digest) the
    last one kept. The caller holds the registration's row lock (or inserted it)."""
    await session.execute(
        KEEP_VERSION,
        {
            "p_registration": registration_id,
            "p_project": project_id,
            "p_document": document,
            "p_digest": digest(document),
            "p_source": source,
            "p_at": at,
            "p_now": now,
        },
    )


async def replace_lookups(
    session: AsyncSession,
    registration_id: str,
    *,
    sender_ids: Sequence[str],
    tags: Sequence[str],
    fresh: bool = False,
) -> None:
    """Make the lookup rows of `registration_id` (`registration_sender_ids`, `registration_tags`)
    hold exactly `sender_ids` and `tags` (each distinct). `fresh`: the registration was inserted
    in this transaction, so it has none yet."""
    for table, column, values in (
        (REGISTRATION_SENDER_IDS, "sender_id", sender_ids),
        (REGISTRATION_TAGS, "tag", tags),
    ):
        if not fresh:
            await session.execute(delete(table).where(table.c.registration_id == registration_id))
        if values:
            await session.execute(
                insert(table), [{"registration_id": registration_id, column: v} for v in values]
            )


RECORD_SLICE = 1000


async def fill_markets(session: AsyncSession, *, now: datetime) -> int:
    """Give every registration without a market the market of its policy, where `market_policies`
    knows it (a registration applied before the map was loaded), each a change of the feed.
    Answers how many changed."""
    policy_market = (
        select(MARKET_POLICIES.c.market_code)
        .where(MARKET_POLICIES.c.policy_id == REGISTRATIONS.c.policy_id)
        .scalar_subquery()
    )
    result = await session.execute(
        update(REGISTRATIONS)
        .where(
            REGISTRATIONS.c.market_code.is_(None),
            REGISTRATIONS.c.policy_id.in_(select(MARKET_POLICIES.c.policy_id)),
        )
        .values(market_code=policy_market, updated_at=now)
        .returning(REGISTRATIONS.c.id, REGISTRATIONS.c.status)
    )
    filled = result.all()
    # Recorded in slices: a statement takes at most 32,767 parameters (asyncpg).
    for start in range(0, len(filled), RECORD_SLICE):
        part = filled[start : start + RECORD_SLICE]
        for status in {status for _, status in part}:
            await changes.record(
                session,
                [registration_id for registration_id, of in part if of == status],
                kind=ChangeKind.DETAILS,
                from_status=status,
                at=now,
                source=HistorySource.RECONCILE,
                now=now,
            )
    return len(filled)


def add_history(
    session: AsyncSession,
    *,
    registration_id: str,
    project_id: str,
    from_status: str | None,
    to_status: str,
    at: datetime,
    source: str,
    event_id: str | None,
    recorded_at: datetime,
    note: str | None = None,
) -> None:
    session.add(
        RegistrationHistory(
            registration_id=registration_id,
            project_id=project_id,
            from_status=from_status,
            to_status=to_status,
            at=at,
            source=source,
            event_id=event_id,
            recorded_at=recorded_at,
            note=note,
        )
    )


async def facts_due_before(
    session: AsyncSession, cutoff: datetime, limit: int, *, projects: frozenset[str]
) -> list[str]:
    """Ids of registrations of `projects` waiting for a facts fetch since before `cutoff`,
    oldest first."""
    result = await session.execute(
        select(Registration.id)
        .where(Registration.facts_due_at < cutoff, only(Registration.project_id, projects))
        .order_by(Registration.facts_due_at)
        .limit(limit)
    )
    return list(result.scalars())


async def facts_due(session: AsyncSession, registration_id: str) -> str | None:
    """The registration's project when it still waits for a facts fetch (a snapshot fetched
    since the need arose has cleared it), else None."""
    result = await session.execute(
        select(Registration.project_id).where(
            Registration.id == registration_id, Registration.facts_due_at.is_not(None)
        )
    )
    return result.scalar_one_or_none()


async def clear_facts_due(
    session: AsyncSession, registration_id: str, *, fetched_at: datetime
) -> None:
    """Stop waiting for a facts fetch that began at `fetched_at` and cannot help (Sinch does not
    know the registration, or answers something unusable). A need that arose after that fetch
    began (a newer callback) stays."""
    await session.execute(
        update(REGISTRATIONS)
        .where(REGISTRATIONS.c.id == registration_id, REGISTRATIONS.c.facts_due_at <= fetched_at)
        .values(facts_due_at=None)
    )


async def postpone_facts(session: AsyncSession, registration_id: str, *, until: datetime) -> None:
    """Look for the registration's facts again at `until` (the sweep takes it then): Sinch was
    unavailable for every try of a fetch."""
    await session.execute(
        update(REGISTRATIONS)
        .where(REGISTRATIONS.c.id == registration_id, REGISTRATIONS.c.facts_due_at.is_not(None))
        .values(facts_due_at=until)
    )


async def get_mark(session: AsyncSession, project_id: str, name: str) -> datetime | None:
    """A named time the worker keeps for project `project_id` (its reconciliation watermark);
    None if never set."""
    row = await session.get(SyncState, (project_id, name))
    return row.value if row is not None else None


async def set_mark(
    session: AsyncSession, project_id: str, name: str, value: datetime, *, now: datetime
) -> None:
    table = SYNC_STATE
    statement = postgresql.insert(table).values(
        project_id=project_id, name=name, value=value, updated_at=now
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["project_id", "name"], set_={"value": value, "updated_at": now}
        )
    )
