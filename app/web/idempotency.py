"""`Idempotency-Key` for any POST, as Stripe does it: a retried request answers the first answer.

A caller sends `Idempotency-Key: <any printable text up to 255 characters>`; the key is its own
(keys are scoped to the caller, the principal's name). The first request with a key claims it
(a row of `idempotency_keys`, committed before the work starts) and runs; its answer, success or
error, is kept with the key. Then, for 24 hours (`IDEMPOTENCY_TTL`):

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
`run` does the work and answers `(status, JSON body)`; without a key it just runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import IDEMPOTENCY_KEYS
from app.core.problems import PROBLEM_MEDIA_TYPE, ProblemError, problem_document
from app.core.schemas import PRINTABLE_PATTERN

IDEMPOTENCY_TTL: Final = timedelta(hours=24)
MAX_KEY_LENGTH: Final = 255
REPLAYED_HEADER: Final = "Idempotent-Replayed"
PRUNE_BATCH: Final = 5000

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


@dataclass(frozen=True, slots=True)
class Claim:
    """This request holds the key: it runs, then `finish` keeps its answer."""

    owner: str
    key: str


@dataclass(frozen=True, slots=True)
class Replay:
    """The key's first answer, to be answered again."""

    status: int
    body: dict[str, Any]


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same" for a key: method, path (with its query) and body, byte
    for byte."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def claim(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    owner: str,
    key: str,
    fingerprint: str,
    now: datetime,
) -> Claim | Replay:
    """Claim `key` for `owner`'s request (committed at once), or answer its kept answer.

    One statement claims a new key or takes over an expired one (made at or before
    `now - IDEMPOTENCY_TTL`); two requests racing for one key are serialized by its primary key,
    so exactly one claims it. `now` is injectable (tests of the expiry). Raises `ProblemError`
    422 (the key was used with another request) or 409 (its first request is still running).
    """
    expired = now - IDEMPOTENCY_TTL
    async with sessionmaker.begin() as session:
        statement = insert(IDEMPOTENCY_KEYS).values(
            owner=owner, key=key, fingerprint=fingerprint, created_at=now
        )
        taken = await session.execute(
            statement.on_conflict_do_update(
                index_elements=[IDEMPOTENCY_KEYS.c.owner, IDEMPOTENCY_KEYS.c.key],
                set_={
                    "fingerprint": statement.excluded.fingerprint,
                    "status": None,
                    "body": None,
                    "created_at": statement.excluded.created_at,
                    "finished_at": None,
                },
                where=IDEMPOTENCY_KEYS.c.created_at <= expired,
            ).returning(IDEMPOTENCY_KEYS.c.key)
        )
        if taken.first() is not None:
            return Claim(owner, key)
        row = (
            await session.execute(
                select(
                    IDEMPOTENCY_KEYS.c.fingerprint,
                    IDEMPOTENCY_KEYS.c.status,
                    IDEMPOTENCY_KEYS.c.body,
                ).where(IDEMPOTENCY_KEYS.c.owner == owner, IDEMPOTENCY_KEYS.c.key == key)
            )
        ).one()
    if row.fingerprint != fingerprint:
        raise ProblemError(
            422,
            "This Idempotency-Key was used with another request (method, path or body); use a "
            "new key for a new request.",
        )
    if row.status is None:
        raise ProblemError(
            409,
            "A request with this Idempotency-Key is still in progress; retry later.",
            headers={"Retry-After": "1"},
        )
    return Replay(row.status, row.body or {})


async def finish(
    sessionmaker: async_sessionmaker[AsyncSession],
    held: Claim,
    *,
    status: int,
    body: dict[str, Any],
    now: datetime,
) -> None:
    """Keep the answer of the request that holds `held`."""
    async with sessionmaker.begin() as session:
        await session.execute(
            IDEMPOTENCY_KEYS.update()
            .where(IDEMPOTENCY_KEYS.c.owner == held.owner, IDEMPOTENCY_KEYS.c.key == held.key)
            .values(status=status, body=body, finished_at=now)
        )


async def release(sessionmaker: async_sessionmaker[AsyncSession], held: Claim) -> None:
    """Free `held` without an answer (the request failed before anything was known done)."""
    async with sessionmaker.begin() as session:
        await session.execute(
            delete(IDEMPOTENCY_KEYS).where(
                IDEMPOTENCY_KEYS.c.owner == held.owner,
                IDEMPOTENCY_KEYS.c.key == held.key,
                IDEMPOTENCY_KEYS.c.status.is_(None),
            )
        )


async def prune(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    stop_at: float | None = None,
    monotonic: Callable[[], float] | None = None,
) -> int:
    """Delete the keys that expired (made at or before `now - IDEMPOTENCY_TTL`), `PRUNE_BATCH`
    per transaction, until none is left or `monotonic()` reaches `stop_at`; answers how many."""
    clock = monotonic or time.monotonic
    expired = now - IDEMPOTENCY_TTL
    keys = tuple_(IDEMPOTENCY_KEYS.c.owner, IDEMPOTENCY_KEYS.c.key)
    total = 0
    while stop_at is None or clock() < stop_at:
        batch = (
            select(IDEMPOTENCY_KEYS.c.owner, IDEMPOTENCY_KEYS.c.key)
            .where(IDEMPOTENCY_KEYS.c.created_at <= expired)
            .limit(PRUNE_BATCH)
        )
        async with sessionmaker.begin() as session:
            result = await session.execute(delete(IDEMPOTENCY_KEYS).where(keys.in_(batch)))
        deleted = getattr(result, "rowcount", 0) or 0
        total += deleted
        if deleted < PRUNE_BATCH:
            break
    return total


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
