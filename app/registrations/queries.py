"""Read-side SQL of the internal API over registrations and their history. Never writes.

Statement builders are separate from their execution so that the query-plan test EXPLAINs the
very SQL the routes run. Every listing is keyset-paginated on an index (migrations 0001, 0002):

- no filter, ordered by id: the primary key;
- `status` (with or without `registrationType`), by id: (status, id);
- `registrationType`, by id: (registration_type, id);
- `updatedSince`, by (status_changed_at, id): (status_changed_at, id);
- `updatedSince` and `status`: (status, status_changed_at, id);
- `updatedSince` and `registrationType`: (registration_type, status_changed_at, id);
- `senderId`, `tag`: the lookup tables' (sender_id, registration_id) and (tag, registration_id),
  joined to the primary key (migration 0005);
- `marketCode`, by id: (market_code, id);
- `overdue=true`: the partial index of overdue forecasts (migration 0011), joined to the primary
  key;
- `projectId` (one project), by id: (project_id, id) (migration 0010); with `status`:
  (project_id, status, id); with `updatedSince`: (project_id, status_changed_at, id) (migration
  0014), so a project with few rows in a state or a time window never walks the other projects'.
The forecasts of a page are read by primary key (`app.forecasts.queries.forecasts_of`).
The console's default, newest change first (`newest_first`), walks (status_changed_at, id)
backwards, or sorts the filtered rows when a filter's index leads.
Several `status` values are one `IN`; the planner then walks the primary key or the (status, id)
index and sorts, both without a sequential scan (tests/api/test_query_plans.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Select, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from app.catalog.diff import FieldChange, document_changes
from app.core.filtering import where_given
from app.core.models import (
    Registration,
    RegistrationForecast,
    RegistrationHistory,
    RegistrationSenderId,
    RegistrationTag,
    RegistrationVersion,
)
from app.core.schemas import MAX_TEXT_LENGTH, PRINTABLE_PATTERN
from app.projects.queries import within
from app.registrations.states import NEEDS_ACTION
from app.tokens.principal import Visible


class _Key(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdKey(_Key):
    """Where a listing ordered by id stopped."""

    id: str = Field(min_length=1, max_length=MAX_TEXT_LENGTH, pattern=PRINTABLE_PATTERN)


class ChangedKey(IdKey):
    """Where a listing ordered by (statusChangedAt, id) stopped."""

    at: AwareDatetime


class NewestKey(IdKey):
    """Where a listing ordered newest change first stopped (`at` None: among the rows without
    a time, which come last)."""

    at: AwareDatetime | None


@dataclass(frozen=True, slots=True)
class RegistrationFilters:
    statuses: tuple[str, ...] = ()
    """Any of these states (none: every state)."""
    registration_type: str | None = None
    sender_id: str | None = None
    market_code: str | None = None
    tags: tuple[str, ...] = ()
    """Every one of these tags."""
    overdue: bool | None = None
    """True: only registrations whose forecast is overdue; False: only those not overdue."""
    needs_action: bool | None = None
    """True: only registrations waiting on the customer (`states.NEEDS_ACTION`); False: only
    those that are not."""
    updated_since: datetime | None = None
    """Only registrations whose `status_changed_at` is at or after it; orders by that time."""
    projects: Visible = None
    """Only these projects' registrations (None: every project): the `projectId` filter within the
    token's limit. One project walks a (project_id, ...) index (migrations 0010, 0014)."""
    newest_first: bool = False
    """Without `updated_since`: order by `status_changed_at` descending (unknown times last),
    then id descending, as an operator reads a list (the console)."""

    @property
    def by_change(self) -> bool:
        return self.updated_since is not None


def registration_statement(registration_id: str, visible: Visible = None) -> Select[Registration]:
    statement = select(Registration).where(Registration.id == registration_id)
    return within(statement, Registration.project_id, visible)


async def get_registration(
    session: AsyncSession, registration_id: str, visible: Visible = None
) -> Registration | None:
    """The registration, when it is known here and belongs to one of `visible` (None: any)."""
    result = await session.execute(registration_statement(registration_id, visible))
    return result.scalar_one_or_none()


def _among(
    registration_id: QueryableAttribute[str],
    condition: ColumnElement[bool] | QueryableAttribute[bool],
) -> ColumnElement[bool]:
    """`Registration.id IN (SELECT registration_id ... WHERE condition)`: the registration has a
    row meeting `condition` in a table keyed by registration (sender ids, tags, forecasts). An IN,
    not a join, so a registration with several matching rows is listed once; negated (`~`), it
    is `NOT IN`."""
    return Registration.id.in_(select(registration_id).where(condition))


def list_statement(
    filters: RegistrationFilters, *, after: IdKey | None, limit: int
) -> Select[Registration]:
    """Registrations matching `filters` after the key `after`, in the listing's order.

    Without `updatedSince` the order is by id: ids never change, so a walk sees every row that
    existed when it started exactly once. With it, the order is by (status_changed_at, id), the
    natural feed of changes: that time only grows (the recency guard), so a row changed during a
    walk moves behind the cursor and is seen again with its newer state, never lost. `after` must
    be a `ChangedKey` then. Asks for `limit` rows (callers pass one more to detect a next page).
    """
    statement = within(select(Registration), Registration.project_id, filters.projects)
    if len(filters.statuses) == 1:
        statement = statement.where(Registration.status == filters.statuses[0])
    elif filters.statuses:
        statement = statement.where(Registration.status.in_(filters.statuses))
    statement = where_given(
        statement,
        (Registration.registration_type, filters.registration_type),
        (Registration.market_code, filters.market_code),
    )
    if filters.sender_id is not None:
        sender_id = RegistrationSenderId.sender_id == filters.sender_id
        statement = statement.where(_among(RegistrationSenderId.registration_id, sender_id))
    for tag in filters.tags:
        statement = statement.where(
            _among(RegistrationTag.registration_id, RegistrationTag.tag == tag)
        )
    if filters.overdue is not None:
        overdue = _among(RegistrationForecast.registration_id, RegistrationForecast.overdue)
        statement = statement.where(overdue if filters.overdue else ~overdue)
    if filters.needs_action is not None:
        waiting = Registration.status.in_([state.value for state in NEEDS_ACTION])
        statement = statement.where(waiting if filters.needs_action else ~waiting)
    if filters.updated_since is not None:
        statement = statement.where(Registration.status_changed_at >= filters.updated_since)
        if after is not None:
            assert isinstance(after, ChangedKey)
            statement = statement.where(
                tuple_(Registration.status_changed_at, Registration.id) > (after.at, after.id)
            )
        statement = statement.order_by(Registration.status_changed_at, Registration.id)
    elif filters.newest_first:
        at = Registration.status_changed_at
        if after is not None:
            assert isinstance(after, NewestKey)
            if after.at is None:
                statement = statement.where(at.is_(None), Registration.id < after.id)
            else:
                statement = statement.where(
                    or_(tuple_(at, Registration.id) < (after.at, after.id), at.is_(None))
                )
        statement = statement.order_by(at.desc().nulls_last(), Registration.id.desc())
    else:
        if after is not None:
            statement = statement.where(Registration.id > after.id)
        statement = statement.order_by(Registration.id)
    return statement.limit(limit)


async def list_registrations(
    session: AsyncSession, filters: RegistrationFilters, *, after: IdKey | None, limit: int
) -> Sequence[Registration]:
    result = await session.execute(list_statement(filters, after=after, limit=limit))
    return result.scalars().all()


def key_of(filters: RegistrationFilters, registration: Registration) -> IdKey:
    """The sort key of `registration` in the listing `filters` select."""
    if filters.by_change:
        assert registration.status_changed_at is not None  # the filter excludes NULL
        return ChangedKey(id=registration.id, at=registration.status_changed_at)
    if filters.newest_first:
        return NewestKey(id=registration.id, at=registration.status_changed_at)
    return IdKey(id=registration.id)


def history_statement(registration_id: str) -> Select[RegistrationHistory]:
    return (
        select(RegistrationHistory)
        .where(RegistrationHistory.registration_id == registration_id)
        # The order applied, not Sinch's `at`: a snapshot that overrules a callback from the
        # future carries an earlier `at` than the row it corrects.
        .order_by(RegistrationHistory.id)
    )


async def history(session: AsyncSession, registration_id: str) -> Sequence[RegistrationHistory]:
    """Every status change of the registration, in the order it was applied here."""
    result = await session.execute(history_statement(registration_id))
    return result.scalars().all()


class VersionKey(BaseModel):
    """Where a listing of a registration's versions stopped: the last version's number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=1, le=2**31 - 1)


@dataclass(frozen=True, slots=True)
class VersionView:
    """A kept version of a registration's document, and what changed from the version before
    (None for the first version kept: there is nothing to compare it with)."""

    version: int
    at: datetime
    recorded_at: datetime
    source: str
    changes: list[FieldChange] | None


def versions_statement(registration_id: str, start: int, limit: int) -> Select[RegistrationVersion]:
    return (
        select(RegistrationVersion)
        .where(
            RegistrationVersion.registration_id == registration_id,
            RegistrationVersion.version >= start,
        )
        .order_by(RegistrationVersion.version)
        .limit(limit)
    )


async def versions(
    session: AsyncSession, registration_id: str, *, after: VersionKey | None, limit: int
) -> list[VersionView]:
    """At most `limit` versions of the registration after `after`, oldest first, each with its
    changes from the one before (app/catalog/diff.py `document_changes`). One range read on the
    primary key: the version before the page is read with it, as the first page's predecessor."""
    start, extra = (after.id, 1) if after is not None else (1, 0)
    statement = versions_statement(registration_id, start, limit + extra)
    rows = list((await session.execute(statement)).scalars())
    previous: RegistrationVersion | None = None
    if after is not None and rows and rows[0].version == after.id:
        previous = rows.pop(0)
    found: list[VersionView] = []
    for row in rows[:limit]:
        changes = (
            document_changes(previous.document, row.document)
            if previous is not None and previous.version == row.version - 1
            else None
        )
        found.append(VersionView(row.version, row.at, row.recorded_at, row.source, changes))
        previous = row
    return found


async def newest_versions(
    session: AsyncSession, registration_id: str, count: int
) -> list[VersionView]:
    """The registration's newest `count` versions (oldest of them first), each with its changes
    from the one before: the console's page. Two reads on the primary key."""
    newest = await session.scalar(
        select(func.max(RegistrationVersion.version)).where(
            RegistrationVersion.registration_id == registration_id
        )
    )
    after = VersionKey(id=newest - count) if newest is not None and newest > count else None
    return await versions(session, registration_id, after=after, limit=count)


async def waiting(
    session: AsyncSession, statuses: Sequence[str], limit: int, visible: Visible = None
) -> list[Registration]:
    """Registrations of `visible`'s projects (None: every project) in any of `statuses`, longest
    in their status first (by `status_since`, unknown last, then id), at most `limit`. One
    indexed walk per status on (status, status_since, id) (migration 0009), merged here: cost
    bounded by `limit`, not the table."""
    found: list[Registration] = []
    for status in statuses:
        result = await session.execute(
            within(select(Registration), Registration.project_id, visible)
            .where(Registration.status == status)
            .order_by(Registration.status_since.nulls_last(), Registration.id)
            .limit(limit)
        )
        found.extend(result.scalars())
    found.sort(key=lambda r: (r.status_since is None, r.status_since or r.created_at, r.id))
    return found[:limit]
