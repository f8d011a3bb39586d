"""Every error answer of the service is `application/problem+json` (RFC 9457), made here.

Routes raise `ProblemError` (or FastAPI's `HTTPException`); the handlers below turn them, validation
errors and anything unexpected into problem documents. Nothing here echoes request input or
exception text back, so no secret can leak through an error answer.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

PROBLEM_MEDIA_TYPE = "application/problem+json"

log = logging.getLogger(__name__)


T = TypeVar("T")


class ProblemError(Exception):
    """An error answer: raise it from a route to answer `status` with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers
        self.extra = extra
        """More members of the problem document (e.g. `errors`); never the caller's input."""

    def response(self) -> JSONResponse:
        """This problem's document as an answer of media type `application/problem+json`."""
        return JSONResponse(
            problem_document(self.status, self.detail, title=self.title, extra=self.extra),
            status_code=self.status,
            headers=self.headers,
            media_type=PROBLEM_MEDIA_TYPE,
        )


def found(thing: T | None, detail: str) -> T:
    """`thing`, or a 404 problem saying `detail` when it is None: what a route answers for an id
    that names nothing."""
    if thing is None:
        raise ProblemError(404, detail)
    return thing


def problem_document(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A problem document with `type` about:blank, the status's phrase as title, and `detail`."""
    document: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        document["detail"] = detail
    if extra:
        document.update(extra)
    return document


def problem_body(status: int, detail: str | None = None) -> bytes:
    """`problem_document` encoded as `ProblemError.response` encodes it, for plain ASGI
    endpoints."""
    # Starlette's JSONResponse encoding, so that both kinds of endpoint answer the same bytes.
    return json.dumps(
        problem_document(status, detail), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return exc.response()


BODY_NOT_PARSED = "There was an error parsing the body"  # FastAPI's words for a body not JSON


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette names only those of the first
    route whose path matched, but one path may have a route per method."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 400 and detail == BODY_NOT_PARSED:
        # A body that is not JSON is invalid input like any other: 422, as every route declares.
        return ProblemError(422, "The body is not valid JSON.").response()
    if detail == HTTPStatus(exc.status_code).phrase:
        detail = None
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = (headers or {}) | {"Allow": _allowed_methods(request)}
    return ProblemError(exc.status_code, detail, headers=headers).response()


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Keep where and what, never the input itself (it may hold anything the caller sent).
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    return ProblemError(
        422, "The request is not valid; see `errors`.", extra={"errors": errors}
    ).response()


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled error on %s %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc_info=exc,
    )
    return ProblemError(500, "An unexpected error occurred; it has been logged.").response()


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error of `app` through the handlers above."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
