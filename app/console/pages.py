"""How every room of the console answers: its templates (with their filters), the security
headers of every answer, a page, a redirect, a refusal, and the readers of the text that forms
and links post. No route here; nothing here reads the database."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from app.console import present
from app.console.viewer import Viewer
from app.core.db import utcnow
from app.core.schemas import MAX_TEXT_LENGTH

HERE = Path(__file__).parent
PAGE_SIZE = 50
STALE_LINK = "That page link is not valid any more."

SECURITY_HEADERS = {
    # Only the console's own stylesheet; no script at all; forms post only here; never framed.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@functools.cache
def _templates() -> Jinja2Templates:
    """Built on first use (no work at import); the templates are part of the package."""
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["ago"] = ago
    environment.filters["when"] = present.when
    environment.filters["money"] = present.money
    environment.filters["tone"] = present.tone
    environment.filters["plain"] = present.plain
    environment.filters["duration"] = present.duration
    environment.filters["share"] = present.share
    return Jinja2Templates(env=environment)


def page(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """`template` rendered with `context` (and the request), with the security headers."""
    response = _templates().TemplateResponse(
        request, template, {"request": request, **context}, status_code=status_code
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def redirect(url: str) -> RedirectResponse:
    """A 303 to `url` (after a POST, the browser GETs it), with the security headers."""
    response = RedirectResponse(url, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def refused(request: Request, who: Viewer | None, status_code: int, message: str) -> HTMLResponse:
    """The refusal page: `message` with `status_code`; nothing was done."""
    # Messages passed on from the API's problems mark names with Markdown backticks: plain here.
    return page(
        request,
        "refused.html",
        {"viewer": who, "message": present.plain(message)},
        status_code=status_code,
    )


class Refusal(Exception):
    """Raised by a route or a dependency to answer the refusal page (`refused`); the console's
    exception handler renders it (`app.console.router.install_console`)."""

    def __init__(self, who: Viewer | None, status_code: int, message: str) -> None:
        super().__init__(message)
        self.who = who
        self.status_code = status_code
        self.message = message


def done(request: Request, who: Viewer, message: str, back: str) -> HTMLResponse:
    """The page saying an action was done, with a link `back`."""
    return page(request, "done.html", {"viewer": who, "message": message, "back": back})


def invalid(who: Viewer, exc: ValidationError) -> Refusal:
    """A form the API's own model refuses: say which field, never echo the value."""
    fields = sorted({".".join(str(part) for part in error["loc"][:1]) for error in exc.errors()})
    return Refusal(who, 422, f"Not saved: check {', '.join(fields)}.")


def text(value: str | None) -> str | None:
    """A form or query field: blank means absent (browsers send empty fields)."""
    if value is None:
        return None
    value = value.strip()
    return value[:MAX_TEXT_LENGTH] or None


def comma_list(value: str | None) -> list[str] | None:
    """A comma-separated form field as a filter: None when blank (every value)."""
    values = [part.strip() for part in (value or "").split(",") if part.strip()]
    return values or None


def moment(value: str | None) -> datetime | None:
    """A `datetime-local` field (or ISO 8601) as a UTC time; None when blank or unreadable."""
    try:
        found = datetime.fromisoformat((value or "").strip())
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def ago(when: datetime | None) -> str:
    """How long ago `when` was, as an operator reads it (`3 d 2 h`, `5 min`); `-` for none."""
    if when is None:
        return "-"
    seconds = int((utcnow() - when).total_seconds())
    if seconds < 0:
        return "in the future"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{seconds} s"


def query(params: Mapping[str, str | None], **changes: str | None) -> str:
    """`params` with `changes` as a query string; blank values left out."""
    merged = {**params, **changes}
    return urlencode({k: v for k, v in merged.items() if v})


def next_link(params: Mapping[str, str | None], cursor: str | None) -> str | None:
    """The query of the next page (`params` and `cursor`); None when there is no next page."""
    return query(params, cursor=cursor) if cursor else None


def path(value: str) -> str:
    """`value` as one segment of a console path (a `/` in an id stays inside it)."""
    return quote(value, safe="")
