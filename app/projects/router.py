"""`GET /v1/projects`, `GET /v1/projects/{projectId}` (scope `read`). HTTP only: parse, call,
answer. A token limited to projects sees only its own; another is 404 as a missing one."""

from __future__ import annotations

from typing import Annotated

from app.core.problems import found
from app.core.schemas import operation, text_path
from app.projects import queries
from app.projects.schemas import ProjectList, ProjectOut
from app.web.auth import LimitDep, api_router
from app.web.deps import ReadSessionDep, ResourcesDep

router = api_router("/v1/projects", "projects")

ProjectId = Annotated[str, text_path("Sinch's project id.", alias="projectId")]


@router.get(
    "",
    **operation("listProjects", "The Sinch projects this deployment serves (never their secrets)"),
)
async def list_projects(
    session: ReadSessionDep, resources: ResourcesDep, limit: LimitDep
) -> ProjectList:
    secret_set = resources.settings.sinch_key_secret is not None
    return ProjectList(
        items=[
            ProjectOut.of(project)
            for project in await queries.list_projects(
                session, limit, environment_secret=secret_set
            )
        ]
    )


@router.get("/{projectId}", **operation("getProject", "One Sinch project (never its secrets)", 404))
async def get_project(
    session: ReadSessionDep, resources: ResourcesDep, limit: LimitDep, project_id: ProjectId
) -> ProjectOut:
    secret_set = resources.settings.sinch_key_secret is not None
    project = await queries.get_project(session, project_id, limit, environment_secret=secret_set)
    return ProjectOut.of(found(project, "No project with this id."))
