"""Signing in to the console with an API token, and signing out (`/console/sign-in`,
`/console/sign-out`). The token is checked once; the session keeps only its principal's name and
the token's fingerprint (`app.console.session`)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.console import session as sessions
from app.console.access import CsrfField, ViewerDep
from app.console.pages import Refusal, page, redirect
from app.web.auth import authenticate
from app.web.deps import ResourcesDep

log = logging.getLogger(__name__)

router = APIRouter(prefix="/console")


def set_cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int
) -> None:
    """Every cookie of the console: sent to the console's paths only, never to scripts nor with a
    request from another site, and only over HTTPS when the console is reached over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=sessions.COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def signed_out(response: Response) -> Response:
    """`response`, ending the browser's session cookie."""
    response.delete_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH)
    return response


def _sign_in_page(
    request: Request, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """The sign-in form with a fresh marker, also set as the cookie its POST must come with."""
    marker = sessions.new_secret()
    context = {"viewer": None, "marker": marker} | ({"error": error} if error else {})
    response = page(request, "sign_in.html", context, status_code=status_code)
    set_cookie(response, request, sessions.SIGN_IN_COOKIE, marker, max_age=900)
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request) -> HTMLResponse:
    return _sign_in_page(request)


@router.post("/sign-in")
async def sign_in(
    request: Request,
    resources: ResourcesDep,
    token: Annotated[str, Form(max_length=4096)] = "",
    marker: Annotated[str | None, Form()] = None,
) -> Response:
    expected = request.cookies.get(sessions.SIGN_IN_COOKIE)
    if expected is None or not sessions.same(marker, expected):
        raise Refusal(
            None,
            403,
            "This sign-in form is not from this site or has expired. Open the sign-in page again.",
        )
    principal = await authenticate(resources, token) if token else None
    if principal is None:
        return _sign_in_page(request, error="That token is not accepted.", status_code=401)
    lifetime = resources.settings.console_session_seconds
    session_id = await sessions.create(resources.redis, principal.name, token, lifetime)
    log.info("console sign-in", extra={"principal": principal.name})
    response = redirect("/console")
    set_cookie(response, request, sessions.SESSION_COOKIE, session_id, max_age=lifetime)
    response.delete_cookie(sessions.SIGN_IN_COOKIE, path=sessions.COOKIE_PATH)
    return response


@router.post("/sign-out")
async def sign_out(resources: ResourcesDep, who: ViewerDep, csrf: CsrfField = None) -> Response:
    # Only the CSRF token: a `read` token may sign out too.
    if not sessions.same(csrf, who.csrf):
        raise Refusal(who, 403, "This form is not from this session. Still signed in.")
    await sessions.end(resources.redis, who.session_id)
    return signed_out(redirect("/console/sign-in"))
