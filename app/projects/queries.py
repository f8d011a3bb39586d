"""Read-side SQL of the projects, and the one place a request's project limit is applied to a
query (`within`). Never writes.

A project's document never holds its key secret nor its callback secrets: `ProjectOut` says only
whether credentials are set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from app.core.models import Project
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


def list_statement(visible: Visible) -> Select[Project]:
    return within(select(Project).order_by(Project.id), Project.id, visible)


async def list_projects(session: AsyncSession, visible: Visible = None) -> Sequence[Project]:
    """The projects of `visible` (None: every project), by id."""
    return (await session.execute(list_statement(visible))).scalars().all()


async def get_project(
    session: AsyncSession, project_id: str, visible: Visible = None
) -> Project | None:
    """The project `project_id` when it exists and is among `visible`, else None."""
    statement = within(select(Project).where(Project.id == project_id), Project.id, visible)
    return (await session.execute(statement)).scalar_one_or_none()
