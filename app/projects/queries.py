"""Reading the projects, and the one place a request's project limit is applied to a query
(`within`). Never writes.

What every page, command and answer about projects shows is a `ProjectView`: never a key secret nor
a callback secret, only whether a key secret is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, Select, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from app.core.models import PROJECTS, CallbackSecret
from app.tokens.principal import Visible

_S = TypeVar("_S", bound=Select[Any])
Column = ColumnElement[Any] | QueryableAttribute[Any]
"""A `project_id` column, of a table or a mapped class."""


def only(column: Column, visible: Visible) -> ColumnElement[bool]:
    """The condition that `column` (a `project_id`) is one of `visible` (true for None: every
    project). One project is an equality, so the listing indexes led by `project_id` serve it."""
    if visible is None:
        return true()
    if len(visible) == 1:
        return column == next(iter(visible))
    return column.in_(sorted(visible))


def within(statement: _S, column: Column, visible: Visible) -> _S:
    """`statement` limited to rows whose `column` is one of `visible`: every listing and lookup of
    a project's data under /v1 and in the console passes here, so a token limited to projects
    never reads another project's row (a lookup then finds nothing: 404 as for a missing row)."""
    if visible is None:
        return statement
    return statement.where(only(column, visible))


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


def _views(visible: Visible) -> Select[Any]:
    secrets = (
        select(func.count())
        .where(CallbackSecret.project_id == PROJECTS.c.id)
        .correlate(PROJECTS)
        .scalar_subquery()
    )
    statement = select(
        PROJECTS.c.id,
        PROJECTS.c.name,
        PROJECTS.c.key_id,
        PROJECTS.c.key_secret_sealed.is_not(None).label("sealed"),
        secrets.label("callback_secrets"),
        PROJECTS.c.from_settings,
        PROJECTS.c.created_at,
        PROJECTS.c.updated_at,
    ).order_by(PROJECTS.c.id)
    return within(statement, PROJECTS.c.id, visible)


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
    session: AsyncSession, visible: Visible = None, *, environment_secret: bool = False
) -> list[ProjectView]:
    """The projects of `visible` (None: every project), by id. `environment_secret`: whether the
    settings give the settings-defined project's key secret (`SINCH_KEY_SECRET`)."""
    rows = await session.execute(_views(visible))
    return [_view(row, environment_secret=environment_secret) for row in rows]


async def get_project(
    session: AsyncSession,
    project_id: str,
    visible: Visible = None,
    *,
    environment_secret: bool = False,
) -> ProjectView | None:
    """Project `project_id` when it exists and is among `visible`, else None."""
    row = (await session.execute(_views(visible).where(PROJECTS.c.id == project_id))).first()
    return None if row is None else _view(row, environment_secret=environment_secret)
