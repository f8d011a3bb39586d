"""Read-side SQL of the catalog. Never writes. Every lookup passes the request's projects
(`within`): a token limited to projects never reads another project's market or policy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Row, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import CATALOG_MARKETS, CATALOG_POLICIES, POLICY_CHANGES
from app.core.schemas import MAX_TEXT_LENGTH, PRINTABLE_PATTERN
from app.projects.queries import within
from app.tokens.principal import Visible

RECENT_CHANGES = 20
"""A policy's answer shows its newest changes, at most this many."""


class MarketKey(BaseModel):
    """Where a listing of markets stopped: the last row's `sort_key`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=MAX_TEXT_LENGTH, pattern=PRINTABLE_PATTERN)


def key_of(row: Row[Any]) -> MarketKey:
    return MarketKey(id=row.sort_key)


async def markets(
    session: AsyncSession,
    *,
    limit: int,
    after: MarketKey | None,
    projects: Visible,
    registration_type: str | None = None,
    market_code: str | None = None,
) -> Sequence[Row[Any]]:
    """Markets by market code, registration type, then project; at most `limit`, after
    `after`; only `projects`' (None: every project)."""
    table = CATALOG_MARKETS
    statement = within(select(table), table.c.project_id, projects)
    if registration_type is not None:
        statement = statement.where(table.c.registration_type == registration_type)
    if market_code is not None:
        statement = statement.where(table.c.market_code == market_code)
    if after is not None:
        statement = statement.where(table.c.sort_key > after.id)
    result = await session.execute(statement.order_by(table.c.sort_key).limit(limit))
    return result.all()


async def policy(session: AsyncSession, policy_id: str, projects: Visible) -> Row[Any] | None:
    """The policy as the first of `projects` (by id) that has it keeps it; None when none does."""
    table = CATALOG_POLICIES
    statement = within(select(table), table.c.project_id, projects).where(
        table.c.policy_id == policy_id
    )
    return (await session.execute(statement.order_by(table.c.project_id).limit(1))).first()


async def policy_documents(
    session: AsyncSession, keys: Iterable[tuple[str, str | None]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The documents of the policies `keys` name, as (project id, policy id); a key without a
    policy id, or naming a policy the project's catalog lacks, is not in the answer. The caller
    has read `keys` from rows its token may see (the projects are those rows')."""
    wanted = {(project, policy) for project, policy in keys if policy}
    if not wanted:
        return {}
    table = CATALOG_POLICIES
    statement = select(table.c.project_id, table.c.policy_id, table.c.document).where(
        tuple_(table.c.project_id, table.c.policy_id).in_(sorted(wanted))
    )
    rows = (await session.execute(statement)).all()
    return {(row.project_id, row.policy_id): row.document for row in rows}


async def policy_changes(
    session: AsyncSession, project_id: str, policy_id: str, *, limit: int = RECENT_CHANGES
) -> Sequence[Row[Any]]:
    """The policy's recorded changes in project `project_id`, newest first."""
    table = POLICY_CHANGES
    statement = (
        select(table)
        .where(table.c.project_id == project_id, table.c.policy_id == policy_id)
        .order_by(table.c.id.desc())
        .limit(limit)
    )
    return (await session.execute(statement)).all()
