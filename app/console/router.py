"""The operator console (`/console`), assembled from its rooms. HTTP only: each page reads
through the same query modules as the internal API (so every number equals what the API
answers), and each action calls the same service function as the API's write route (one
implementation of each write).

Every page is plain HTML that works without JavaScript; its own CSS is served from the package.
The rooms: sign-in and sign-out (`sign_in`), the overview and the audit trail (`overview`),
aging (`aging`), registrations (`registrations`; a new one: `new_registration`, both forms'
common steps in `registration_writes` and `registration_form`), events (`events`),
subscriptions as read (`subscriptions`) and changed (`subscription_actions`), projects
(`projects`). Who may see and
do what: `viewer` and `access`; how a page, a redirect and a refusal are answered: `pages`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from app.console import (
    aging,
    events,
    new_registration,
    overview,
    projects,
    registrations,
    sign_in,
    subscription_actions,
    subscriptions,
)
from app.console.access import SignInRequired, UnreadableInput, readable
from app.console.pages import HERE, Refusal, redirect, refused

router = APIRouter(include_in_schema=False, dependencies=[Depends(readable)])
for room in (
    sign_in,
    overview,
    aging,
    new_registration,
    registrations,
    events,
    subscriptions,
    subscription_actions,
    projects,
):
    router.include_router(room.router)


def install_console(app: FastAPI) -> None:
    """Add the console's pages, its static files and its sign-in redirect to `app`."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    async def to_sign_in(_request: Request, _exc: Exception) -> Response:
        return sign_in.signed_out(redirect("/console/sign-in"))

    async def refusal(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        return refused(request, exc.who, exc.status_code, exc.message)

    async def unreadable(request: Request, _exc: Exception) -> Response:
        return refused(
            request,
            None,
            400,
            "This address holds a character no page takes (a control "
            "character). Nothing was looked up.",
        )

    app.add_exception_handler(SignInRequired, to_sign_in)
    app.add_exception_handler(Refusal, refusal)
    app.add_exception_handler(UnreadableInput, unreadable)
