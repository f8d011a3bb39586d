"""The project a test's rows belong to: the one the settings define, whatever its id is now (the
placeholder of a fresh test database, or SINCH_PROJECT_ID once a started process renamed it)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.models import Project


async def settings_project(session: AsyncSession | AsyncConnection) -> str:
    project_id = await session.scalar(select(Project.id).where(Project.from_settings))
    assert project_id is not None, "the test database has no settings-defined project"
    return project_id
