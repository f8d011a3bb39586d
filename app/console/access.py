"""Who may see and do what in the console: the dependencies every room's routes take.

A page needs a session whose principal still exists (`viewer`, asked on every request); an
action (a POST) also needs the session's CSRF token and a principal whose scope allows `write`
(`acting`). Every route first checks that its path and query hold no control character
(`readable`). Sessions and CSRF tokens themselves: `app.console.session`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, Request

from app.audit.repository import Actor
from app.console import session as sessions
from app.console.pages import Refusal, text
from app.console.viewer import Viewer
from app.projects import queries as project_queries
from app.web.auth import principal_named
from app.web.deps import ResourcesDep

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnreadableInput(Exception):
    """A path or query parameter with a control character (a NUL, ...): no page takes one."""


def readable(request: Request) -> None:
    """Every console route's first dependency: the path and the query parameters (decoded) hold
    no control character, else `UnreadableInput` (400). PostgreSQL refuses a NUL in text, so one
    reaching a query was a 500 with the SQL logged; nothing valid has one."""
    texts = [request.scope["path"], *request.query_params.keys(), *request.query_params.values()]
    if any(_CONTROL.search(value) for value in texts):
        raise UnreadableInput


class SignInRequired(Exception):
    """No session, an expired one, or one whose principal no longer exists."""


async def viewer(request: Request, resources: ResourcesDep) -> Viewer:
    """The signed-in viewer of this request, else `SignInRequired` (a redirect to sign-in)."""
    session_id = request.cookies.get(sessions.SESSION_COOKIE)
    found = await sessions.load(resources.redis, session_id)
    if found is None or session_id is None:
        raise SignInRequired
    principal = await principal_named(resources, found.principal, found.fingerprint)
    if principal is None:  # its token was revoked or replaced: the session ends with it
        await sessions.end(resources.redis, session_id)
        raise SignInRequired
    async with resources.reader() as session:
        projects = tuple(
            p.id for p in await project_queries.list_projects(session, principal.projects)
        )
    return Viewer(
        principal=principal,
        csrf=found.csrf,
        session_id=session_id,
        project=text(request.query_params.get("project")),
        projects=projects,
    )


ViewerDep = Annotated[Viewer, Depends(viewer)]
CsrfField = Annotated[str | None, Form(alias="csrf")]


@dataclass(frozen=True, slots=True)
class Acting:
    """A viewer allowed to perform the POSTed action, and who it is for the audit trail (the
    same as through the API: the token's name and the request's addresses)."""

    who: Viewer
    actor: Actor


async def acting(request: Request, who: ViewerDep, csrf: CsrfField = None) -> Acting:
    """Every action's preamble: the form carries this session's CSRF token and the token may
    `write`; else `Refusal` (403), nothing done."""
    if not sessions.same(csrf, who.csrf):
        raise Refusal(
            who,
            403,
            "This form is not from this session (its CSRF token is missing "
            "or wrong). Nothing was done; reload the page and try again.",
        )
    if not who.may_act:
        raise Refusal(
            who,
            403,
            f"You are signed in with a {who.principal.scope} token: it may look, not act. "
            "Nothing was done.",
        )
    return Acting(who=who, actor=Actor.of_request(request, who.principal.name))


ActingDep = Annotated[Acting, Depends(acting)]
