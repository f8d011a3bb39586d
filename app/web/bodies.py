"""Request bodies of every route but the callback endpoint: token first, then at most
`API_MAX_BODY_BYTES`.

FastAPI reads a route's whole body (JSON or form) before it solves the route's dependencies, the
bearer check included, and sets no limit: anyone could make a process hold any number of bytes,
without a token. `BodyGuard` sits in front of the routes (app.main.ServiceAPI) and, for a request
that declares a body (`Content-Length` above 0, or `Transfer-Encoding`):
- under `/v1`, checks the bearer token before reading a byte: without an accepted one the answer
  is the route's own 401 problem (or 503 when tokens cannot be checked), the body unread (a body
  of a declared length within the cap is dropped by the server after the answer);
- everywhere (the console's forms too), reads the body up to `API_MAX_BODY_BYTES`: a larger one,
  declared or streamed, is answered 413 as soon as the limit is passed, the rest unread;
- hands the route the body it read.
An answer sent before the body was read whole closes the connection, unless the body declared a
length within the cap (`app.web.asgi.before_body`: closing on a client still sending can reset the
connection before the client reads its answer). The route still checks the token's scope itself.

Two routes take more: an attachment upload (`POST /v1/registrations/{id}/attachments/{aid}`,
and the console's form `POST /console/registrations/{id}/attachments/{aid}`) may carry a file of
`ATTACHMENT_MAX_BYTES` in its multipart body, so its cap is the larger of `API_MAX_BODY_BYTES`
and that plus `MULTIPART_FRAMING_BYTES` (`body_limit`). It is read into memory whole, as every
body here: a process holds at most that much per upload in flight. As the API's upload takes it
only after its token is accepted, the console's takes it only from a request whose session
cookie names a live console session; any other request there is held to `API_MAX_BODY_BYTES`.

The callback endpoint is not behind this guard: it caps its own body (`CALLBACK_MAX_BODY_BYTES`).
"""

from __future__ import annotations

import re
from typing import Final

from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.console import session as console_sessions
from app.core.problems import ProblemError
from app.core.settings import Settings
from app.web.asgi import (
    Answer,
    BodyTooLarge,
    ClientGone,
    before_body,
    closing,
    declared_length,
    problem_answer,
    read_capped_body,
)
from app.web.auth import identify
from app.web.deps import Resources

MULTIPART_FRAMING_BYTES: Final = 65_536
"""What an upload's body may hold besides its file: boundaries, part headers (a long file
name), the odd extra field."""
_UPLOAD_PATH: Final = re.compile(
    r"^(?:/v1/registrations/[^/]+|/console/registrations/.+)/attachments/[^/]+$"
)
"""The API's upload and the console's (whose registration ids may hold a `/`, as its pages')."""


def body_limit(settings: Settings, method: str, path: str) -> int:
    """The largest body accepted for `method` `path` (module docstring)."""
    limit = settings.api_max_body_bytes
    if method == "POST" and _UPLOAD_PATH.match(path):
        return max(limit, settings.attachment_max_bytes + MULTIPART_FRAMING_BYTES)
    return limit


def _declared(scope: Scope) -> tuple[bool, int | None]:
    """Whether the request has a body, and its declared length (None when not declared)."""
    length = declared_length(scope["headers"])
    chunked = any(name == b"transfer-encoding" for name, _ in scope["headers"])
    return chunked or bool(length), length


def _bearer(scope: Scope) -> str | None:
    """The bearer token of the request, as `HTTPBearer` reads it (None: no such header)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, credentials = get_authorization_scheme_param(value.decode("latin-1"))
            return credentials if scheme.lower() == "bearer" and credentials else None
    return None


async def _signed_in(resources: Resources, scope: Scope) -> bool:
    """Whether the request's console session cookie names a live session (the principal is
    checked later, by the route, as on every console request)."""
    for name, value in scope["headers"]:
        if name == b"cookie":
            found = cookie_parser(value.decode("latin-1")).get(console_sessions.SESSION_COOKIE)
            return await console_sessions.load(resources.redis, found) is not None
    return False


def _refusal(exc: ProblemError) -> Answer:
    answer = problem_answer(exc.status, exc.detail or exc.title)
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()
    ]
    return Answer({**answer.start, "headers": [*answer.start["headers"], *headers]}, answer.body)


class BodyGuard:
    """The ASGI middleware described above, around `app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_body, declared = _declared(scope)
        if not has_body:
            await self.app(scope, receive, send)
            return
        resources: Resources = scope["state"]["resources"]
        path: str = scope["path"]
        limit = body_limit(resources.settings, scope["method"], path)
        if path == "/v1" or path.startswith("/v1/"):
            try:
                await identify(resources, _bearer(scope))
            except ProblemError as exc:
                # Refused: never the upload's larger cap (only an accepted caller has that).
                refusal = before_body(
                    _refusal(exc), declared, resources.settings.api_max_body_bytes
                )
                await self._answer(send, refusal)
                return
        elif limit > resources.settings.api_max_body_bytes and not await _signed_in(
            resources, scope
        ):
            limit = resources.settings.api_max_body_bytes
        try:
            body = await read_capped_body(receive, declared, limit)
        except ClientGone:  # the caller left before its body came: nobody to answer
            return
        except BodyTooLarge:
            await self._answer(
                send, closing(problem_answer(413, f"The body exceeds {limit} bytes."))
            )
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _answer(send: Send, answer: Answer) -> None:
        await send(answer.start)
        await send(answer.body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` answering `body` whole first, then whatever the connection says next (a
    disconnect, which streaming answers wait for)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
