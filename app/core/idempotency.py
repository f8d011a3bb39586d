"""The storage of `Idempotency-Key`s: every write to `idempotency_keys`.

A key is claimed (a row, committed before its request's work starts), then finished (its answer
kept) or released (freed, nothing known done); a key made `IDEMPOTENCY_TTL` ago or earlier is free
again, and `prune` (the daily prune job) deletes it. The rules a request sees (replay, 422, 409)
and the route wrapper are the HTTP edge's (`app.web.idempotency`); the worker's prune job uses
this module alone, so it stands below both.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.models import IDEMPOTENCY_KEYS
from app.core.problems import ProblemError

IDEMPOTENCY_TTL: Final = timedelta(hours=24)
PRUNE_BATCH: Final = 5000


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
