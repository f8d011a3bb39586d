"""The console's projects (`/console/projects`): every project, never a secret; with a `write`
token, forms to add, rename and remove one (the same service functions as the API's routes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.repository import Actor
from app.console.access import Acting, ActingDep, ViewerDep
from app.console.pages import Refusal, page, redirect, text
from app.core.db import utcnow
from app.projects import queries as project_queries
from app.projects import service as project_service
from app.projects.secrets import SecretsKeyMissing, WrongSecretsKey, box_of
from app.web.deps import ResourcesDep

router = APIRouter(prefix="/console")

_NOTES = {
    "added": "Project added: every API and worker process serves it within seconds.",
    "renamed": "Project renamed.",
    "removed": "Project removed: its callbacks are refused (404) within seconds.",
}

Write = Callable[[AsyncSession, Actor, datetime], Awaitable[None]]


@router.get("/projects")
async def projects(request: Request, resources: ResourcesDep, who: ViewerDep) -> HTMLResponse:
    """Every project (never a secret); with a write token, forms to add, rename, remove."""
    async with resources.reader() as session:
        found = await project_queries.list_projects(
            session, environment_secret=resources.settings.sinch_key_secret is not None
        )
    return page(
        request,
        "projects.html",
        {"viewer": who, "projects": found, "note": text(request.query_params.get("note"))},
    )


async def _project_write(
    resources: ResourcesDep, acting: Acting, write: Write, done: str
) -> Response:
    """Run `write(session, actor, now)` in a transaction; a refusal of the service
    (`ProjectRefused`, `SecretsKeyMissing`, ...) is the refusal page, nothing changed."""
    try:
        async with resources.sessionmaker.begin() as session:
            await write(session, acting.actor, utcnow())
    except (project_service.ProjectRefused, SecretsKeyMissing, WrongSecretsKey) as exc:
        raise Refusal(acting.who, 409, f"{exc}. Nothing was changed.") from None
    return redirect("/console/projects?" + urlencode({"note": _NOTES[done]}))


@router.post("/projects")
async def add_project(
    resources: ResourcesDep,
    acting: ActingDep,
    project_id: Annotated[str, Form()],
    key_id: Annotated[str, Form()],
    key_secret: Annotated[SecretStr, Form()],
    callback_secret: Annotated[SecretStr, Form()],
    name: Annotated[str | None, Form()] = None,
) -> Response:
    async def write(session: AsyncSession, actor: Actor, now: datetime) -> None:
        await project_service.add_project(
            session,
            box_of(resources.settings.project_secrets_key),
            project_id=project_id.strip(),
            name=text(name) or project_id.strip(),
            key_id=key_id,
            key_secret=key_secret,
            callback_secret=callback_secret,
            actor=actor,
            now=now,
        )

    return await _project_write(resources, acting, write, "added")


@router.post("/projects/{project_id}/rename")
async def rename_project(
    resources: ResourcesDep, acting: ActingDep, project_id: str, name: Annotated[str, Form()]
) -> Response:
    async def write(session: AsyncSession, actor: Actor, now: datetime) -> None:
        await project_service.rename_project(session, project_id, name, actor=actor, now=now)

    return await _project_write(resources, acting, write, "renamed")


@router.post("/projects/{project_id}/remove")
async def remove_project(
    resources: ResourcesDep,
    acting: ActingDep,
    project_id: str,
    with_data: Annotated[str | None, Form()] = None,
) -> Response:
    async def write(session: AsyncSession, actor: Actor, now: datetime) -> None:
        await project_service.remove_project(
            session,
            project_id,
            with_data=bool(with_data),
            actor=actor,
            settings_project_id=resources.settings.settings_project_id,
            now=now,
        )

    return await _project_write(resources, acting, write, "removed")
