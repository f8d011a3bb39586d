"""`Idempotency-Key` for any POST, as Stripe does it: a retried request answers the first answer.

A caller sends `Idempotency-Key: <any printable text up to 255 characters>`; the key is its own
(keys are scoped to the caller, the principal's name). The first request with a key claims it
(a row of `idempotency_keys`, committed before the work starts) and runs; its answer, success or
error, is kept with the key. Then, for 24 hours (`app.core.idempotency.IDEMPOTENCY_TTL`):

- the same key with the same request (method, path and query, body, byte for byte) answers the kept
  answer again, status and body, with `Idempotent-Replayed: true`, and does nothing else;
- the same key with another request is refused: 422;
- the same key while its first request is still running is refused: 409 (retry later).

A key older than 24 hours is free again (and pruned by the daily prune job). A request refused
before it claims its key (no token, an invalid body, a refused configuration) keeps nothing, so
a fixed request may reuse the key, as with Stripe. When the work fails unexpectedly (a 500) the
claim is released: nothing is known to have been done. A process that dies mid-request leaves its
key in flight (409) until the key expires: the work may or may not have been done, so running it
again on the same key could do it twice.

Use: `await idempotent(sessionmaker, request, owner=..., key=..., run=...)` from a route, where
`run` does the work and answers `(status, JSON body)`; without a key it just runs. The keys' rows
(claim, finish, release, prune) are `app.core.idempotency`'s, which the worker's prune job uses too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.idempotency import Replay, claim, fingerprint, finish, release
from app.core.problems import PROBLEM_MEDIA_TYPE, ProblemError, problem_document
from app.core.schemas import PRINTABLE_PATTERN

MAX_KEY_LENGTH: Final = 255
REPLAYED_HEADER: Final = "Idempotent-Replayed"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=PRINTABLE_PATTERN,
        description="Any text up to 255 characters, unique per request you mean (a UUID): a "
        "retry with the same key and body answers the first answer again instead of acting "
        "twice; the same key with another body is 422, while the first is running 409. Kept 24 "
        "hours.",
    ),
]
"""The `Idempotency-Key` header of a route that honours it."""


Work = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
"""A route's work: its answer as (HTTP status, JSON body)."""


async def idempotent(
    sessionmaker: async_sessionmaker[AsyncSession],
    request: Request,
    *,
    owner: str,
    key: str | None,
    run: Work,
    clock: Callable[[], datetime] = utcnow,
) -> JSONResponse:
    """Run `run` under `key` (the module's rules), or just run it when `key` is None.

    A `ProblemError` from `run` is an answer like any other: kept (as its problem document, to
    be replayed) and raised on. Any other exception releases the key and propagates (a 500).
    """
    if key is None:
        status, body = await run()
        return _response(status, body)
    outcome = await claim(
        sessionmaker,
        owner=owner,
        key=key,
        fingerprint=fingerprint(request.method, _target(request), await request.body()),
        now=clock(),
    )
    if isinstance(outcome, Replay):
        return _response(outcome.status, outcome.body, replayed=True)
    try:
        status, body = await run()
    except ProblemError as exc:
        document = problem_document(exc.status, exc.detail, title=exc.title, extra=exc.extra)
        await finish(sessionmaker, outcome, status=exc.status, body=document, now=clock())
        raise
    except BaseException:
        await release(sessionmaker, outcome)
        raise
    await finish(sessionmaker, outcome, status=status, body=body, now=clock())
    return _response(status, body)


def _target(request: Request) -> str:
    """The path with its query (`?validateOnly=true` is another request)."""
    query = request.url.query
    return f"{request.url.path}?{query}" if query else request.url.path


def _response(status: int, body: dict[str, Any], *, replayed: bool = False) -> JSONResponse:
    return JSONResponse(
        body,
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE if status >= 400 else None,
        headers={REPLAYED_HEADER: "true"} if replayed else None,
    )
