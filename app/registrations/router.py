"""Internal API over registrations (`/v1/registrations`). HTTP only: parse, call, answer.

Reads come from the local copy, never from Sinch; only `refresh` calls Sinch, and it does so before
its transaction begins, so no database lock is held across the network call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Query
from pydantic import StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog import queries as catalog_queries
from app.changes.live import SequencerDep
from app.core.models import Registration
from app.core.problems import ProblemError, found
from app.core.schemas import (
    MAX_TEXT_LENGTH,
    PRINTABLE_PATTERN,
    QueryTime,
    operation,
    text_filter,
    text_path,
)
from app.forecasts import queries as forecast_queries
from app.registrations import queries, service
from app.registrations.schemas import (
    HistoryItem,
    HistoryOut,
    RegistrationOut,
    RegistrationPage,
    VersionItem,
    VersionPage,
)
from app.tokens.principal import Visible
from app.web.auth import ActorDep, LimitDep, VisibleDep, api_router
from app.web.deps import ReadSessionDep, ResourcesDep
from app.web.pages import RowIdPageDep, TextIdPageDep

router = api_router("/v1/registrations", "registrations")

RegistrationId = Annotated[str, text_path("The registration's id (Sinch's).", alias="id")]


MAX_STATUS_FILTER_LENGTH = 1024
MAX_TAG_FILTERS = 20
FilterText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TEXT_LENGTH, pattern=PRINTABLE_PATTERN)
]


def _statuses(status: str | None) -> tuple[str, ...]:
    """The states a `status` filter names: comma-separated, each once, blanks ignored."""
    if status is None:
        return ()
    named = tuple(dict.fromkeys(part.strip() for part in status.split(",") if part.strip()))
    if not named:
        raise ProblemError(422, "`status` names no state.")
    return named


async def _known(session: AsyncSession, registration_id: str, visible: Visible) -> Registration:
    registration = await queries.get_registration(session, registration_id, visible)
    return found(registration, "No registration with this id is known here.")


@router.get(
    "",
    **operation(
        "listRegistrations",
        "List registrations",
        description="Ordered by id; with `updatedSince`, by (`statusChangedAt`, id), oldest first, "
        "so a registration changed during a walk shows up again with its newer state.",
    ),
)
async def list_registrations(
    session: ReadSessionDep,
    asked: TextIdPageDep,
    projects: VisibleDep,
    status: Annotated[
        str | None,
        text_filter(
            "Only registrations in this state (Sinch's name, e.g. `APPROVED`), or in "
            "any of several, comma-separated (`PENDING,PENDING_ATTACHMENTS`).",
            max_length=MAX_STATUS_FILTER_LENGTH,
        ),
    ] = None,
    registration_type: Annotated[
        str | None,
        text_filter(
            "Only registrations of this type (e.g. `ALPHANUMERIC_SENDER_ID`).",
            alias="registrationType",
        ),
    ] = None,
    sender_id: Annotated[
        str | None,
        text_filter(
            "Only registrations that ask for this sender ID (any of their `senderIds`, exactly).",
            alias="senderId",
        ),
    ] = None,
    market_code: Annotated[
        str | None,
        text_filter(
            "Only registrations in this market (ISO 3166 alpha-2, e.g. `GB`).", alias="marketCode"
        ),
    ] = None,
    tag: Annotated[
        list[FilterText] | None,
        Query(
            max_length=MAX_TAG_FILTERS,
            description="Only registrations carrying this tag (e.g. `#billing`); repeat it for "
            "registrations carrying every one of several.",
        ),
    ] = None,
    updated_since: Annotated[
        QueryTime | None,
        Query(
            alias="updatedSince",
            description="Only registrations whose `statusChangedAt` is at or after this time "
            "(ISO 8601 with an offset).",
        ),
    ] = None,
    overdue: Annotated[
        bool | None,
        Query(
            description="`true`: only registrations whose `forecast` is overdue (waited past "
            "their market's p85 or Sinch's `etaDate`); `false`: only those that are not."
        ),
    ] = None,
    needs_action: Annotated[
        bool | None,
        Query(
            alias="needsAction",
            description="`true`: only registrations waiting on the customer (PENDING, "
            "PENDING_ATTACHMENTS, REJECTED; each says what in `needsAction`); `false`: only "
            "those that are not.",
        ),
    ] = None,
) -> RegistrationPage:
    filters = queries.RegistrationFilters(
        statuses=_statuses(status),
        registration_type=registration_type,
        sender_id=sender_id,
        market_code=market_code,
        tags=tuple(dict.fromkeys(tag or ())),
        updated_since=updated_since,
        overdue=overdue,
        needs_action=needs_action,
        projects=projects,
    )
    key_model = queries.ChangedKey if filters.by_change else queries.IdKey
    after = asked.after(key_model)
    rows = await queries.list_registrations(session, filters, after=after, limit=asked.limit + 1)
    items, next_cursor = asked.split(rows, lambda row: queries.key_of(filters, row))
    return RegistrationPage(items=await answers(session, items), next_cursor=next_cursor)


async def answers(session: AsyncSession, rows: Sequence[Registration]) -> list[RegistrationOut]:
    """The answers of `rows` (registrations the caller may see), with their forecasts and, for
    those waiting on the customer, their policies (what `needsAction` names): two queries more
    for a page, whatever its size."""
    forecasts = await forecast_queries.forecasts_of(session, [row.id for row in rows])
    policies = await catalog_queries.policy_documents(session, RegistrationOut.policy_keys(rows))
    return [
        RegistrationOut.of(
            row, forecasts.get(row.id), policies.get((row.project_id, row.policy_id or ""))
        )
        for row in rows
    ]


@router.get("/{id}", **operation("getRegistration", "One registration, as kept locally", 404))
async def get_registration(
    session: ReadSessionDep, limit: LimitDep, registration_id: RegistrationId
) -> RegistrationOut:
    registration = await _known(session, registration_id, limit)
    [answer] = await answers(session, [registration])
    return answer


@router.get(
    "/{id}/history",
    **operation("getRegistrationHistory", "A registration's status changes, oldest first", 404),
)
async def get_history(
    session: ReadSessionDep, limit: LimitDep, registration_id: RegistrationId
) -> HistoryOut:
    await _known(session, registration_id, limit)
    rows = await queries.history(session, registration_id)
    return HistoryOut(items=[HistoryItem.model_validate(row) for row in rows])


@router.get(
    "/{id}/versions",
    **operation(
        "listRegistrationVersions",
        "The documents Sinch gave for a registration, and what changed between them",
        404,
        description="Each distinct document kept (a document equal to the one before is not "
        "kept again), oldest first, with the fields added, changed and removed since the "
        "version before.",
    ),
)
async def list_versions(
    session: ReadSessionDep,
    visible: LimitDep,
    registration_id: RegistrationId,
    asked: RowIdPageDep,
) -> VersionPage:
    await _known(session, registration_id, visible)
    after = asked.after(queries.VersionKey)
    views = await queries.versions(session, registration_id, after=after, limit=asked.limit + 1)
    items, next_cursor = asked.split(views, lambda view: queries.VersionKey(id=view.version))
    return VersionPage(items=[VersionItem.of(view) for view in items], next_cursor=next_cursor)


@router.post(
    "/{id}/refresh",
    **operation(
        "refreshRegistration",
        "Fetch the registration from Sinch now and apply it",
        403,
        404,
        502,
        503,
        description="Applies Sinch's document with the recency guard (newer local news is kept) "
        "and answers the registration as kept afterwards. Works for a registration not yet known "
        "here, except with a token limited to projects: that refreshes only its projects' "
        "registrations (any other is 404, as a missing one).",
    ),
)
async def refresh_registration(
    resources: ResourcesDep,
    sequencer: SequencerDep,
    registration_id: RegistrationId,
    actor: ActorDep,
    limit: LimitDep,
) -> RegistrationOut:
    if limit is not None:
        async with resources.reader() as session:
            await _known(session, registration_id, limit)
    refreshed = await service.refresh(
        resources.sessionmaker, resources.sinch, sequencer, registration_id, actor=actor
    )
    async with resources.reader() as session:
        [answer] = await answers(session, [refreshed])
    return answer
