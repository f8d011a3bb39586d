"""The console's "New registration" (write scope): pick a policy of a project's catalog (its
market and registration type), fill the form generated from it (app/console/registration_form.py),
and submit. The server checks the form as `POST /v1/registrations?validateOnly=true` does and
shows each field's error beside it; a form that passes is submitted through
`app.submissions.service.submit`, the API's `POST` path, audited as the console's user.

The project is the switcher's (`?project=`), or the token's only one. Nothing here needs
JavaScript: the policy is a link, the form a plain POST with the session's CSRF token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.catalog import queries as catalog_queries
from app.console.access import ViewerDep
from app.console.pages import Refusal, page, path, text
from app.console.registration_writes import FormState, WriterDep, policy_of, posted, shown
from app.console.viewer import Viewer
from app.core.models import Registration
from app.core.pagination import MAX_LIMIT
from app.sinch.client import SinchClient
from app.submissions import service as submissions
from app.web.deps import ResourcesDep

router = APIRouter(prefix="/console")

HERE = "/console/new-registration"
UNKNOWN_POLICY = (
    "This project's catalog has no such policy. Pick one from the list, or refresh the catalog "
    "(python -m app catalog refresh)."
)


def _writer(who: Viewer) -> None:
    if not who.may_act:
        raise Refusal(
            who,
            403,
            f"You are signed in with a {who.principal.scope} token: it may look, not submit.",
        )


def _project(who: Viewer, named: str | None) -> str | None:
    """The project the form is for: `named` (one the token sees, else 404), or the token's only
    project; None when the viewer must pick one."""
    if named is not None:
        if named not in who.projects:
            raise Refusal(who, 404, "No project with this id is known here.")
        return named
    return who.projects[0] if len(who.projects) == 1 else None


def _form_page(
    request: Request, who: Viewer, project_id: str, state: FormState, *, status_code: int = 200
) -> Response:
    return page(
        request,
        "new_registration.html",
        {"viewer": who, "project_id": project_id, "form": state, "policy": state.policy},
        status_code=status_code,
    )


@router.get("/new-registration")
async def new_registration(
    request: Request, resources: ResourcesDep, who: ViewerDep, policy: str | None = None
) -> Response:
    _writer(who)
    project_id = _project(who, who.project)
    policy_id = text(policy)
    if project_id is not None and policy_id is not None:
        row = await policy_of(resources, project_id, policy_id)
        if row is None:
            raise Refusal(who, 404, UNKNOWN_POLICY)
        return _form_page(request, who, project_id, shown(row, {}))
    async with resources.reader() as session:
        markets = await catalog_queries.markets(
            session, limit=MAX_LIMIT, after=None, projects=who.visible
        )
    return page(
        request,
        "new_registration.html",
        {"viewer": who, "project_id": project_id, "markets": markets, "policy": None},
    )


@router.post("/new-registration")
async def submit(request: Request, writer: WriterDep) -> Response:
    who = writer.acting.who
    values = await posted(request)
    project_id = _project(who, text(values.get("project")))
    policy_id = text(values.get("policy"))
    if project_id is None or policy_id is None:
        raise Refusal(who, 422, "Pick a project and a policy first. Nothing was sent.")
    row = await policy_of(writer.resources, project_id, policy_id)
    if row is None:
        raise Refusal(who, 404, UNKNOWN_POLICY)

    async def send(sinch: SinchClient, body: dict[str, Any]) -> Registration:
        return await submissions.submit(
            writer.resources.sessionmaker, sinch, body, actor=writer.acting.actor
        )

    outcome = await writer.check_and_send(project_id, row, values, send)
    if isinstance(outcome, FormState):
        return _form_page(request, who, project_id, outcome, status_code=422)
    return writer.written(f"/console/registrations/{path(outcome.id)}?done=submitted")
