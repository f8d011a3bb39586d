"""Reading the projects: what every page, command and answer about projects shows. Never a key
secret nor a callback secret: a `ProjectView` holds whether a key secret is set, not the secret.

Shared with the API's read side (`GET /v1/projects`): one query for the list, one for a project.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import PROJECTS, CallbackSecret


@dataclass(frozen=True, slots=True)
class ProjectView:
    """A project as shown: no secret in it (its repr included)."""

    id: str
    name: str
    key_id: str | None
    key_secret_set: bool
    """Whether a key secret is known (sealed in the database, or the environment's for the
    settings-defined project)."""
    callback_secrets: int
    """How many callback secrets are accepted from the database (the environment's aside)."""
    from_settings: bool
    created_at: datetime
    updated_at: datetime


def _views() -> Select[Any]:
    secrets = (
        select(func.count())
        .where(CallbackSecret.project_id == PROJECTS.c.id)
        .correlate(PROJECTS)
        .scalar_subquery()
    )
    return select(
        PROJECTS.c.id,
        PROJECTS.c.name,
        PROJECTS.c.key_id,
        PROJECTS.c.key_secret_sealed.is_not(None).label("sealed"),
        secrets.label("callback_secrets"),
        PROJECTS.c.from_settings,
        PROJECTS.c.created_at,
        PROJECTS.c.updated_at,
    ).order_by(PROJECTS.c.id)


def _view(row: Row[Any], *, environment_secret: bool) -> ProjectView:
    return ProjectView(
        id=row.id,
        name=row.name,
        key_id=row.key_id,
        key_secret_set=bool(row.sealed) or (bool(row.from_settings) and environment_secret),
        callback_secrets=int(row.callback_secrets),
        from_settings=bool(row.from_settings),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def list_projects(
    session: AsyncSession, *, environment_secret: bool = False
) -> list[ProjectView]:
    """Every project, by id. `environment_secret`: whether the settings give the
    settings-defined project's key secret (`SINCH_KEY_SECRET`)."""
    rows = await session.execute(_views())
    return [_view(row, environment_secret=environment_secret) for row in rows]


async def get_project(
    session: AsyncSession, project_id: str, *, environment_secret: bool = False
) -> ProjectView | None:
    """Project `project_id`, or None when there is no such project."""
    row = (await session.execute(_views().where(PROJECTS.c.id == project_id))).first()
    return None if row is None else _view(row, environment_secret=environment_secret)
