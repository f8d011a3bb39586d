"""What the worker, the CLI and the API do with kept events beyond processing one: pruning them and
replaying them. One implementation for every door; each call owns its short transactions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from arq import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.actions import Action
from app.audit.repository import Actor, record
from app.core.db import utcnow
from app.core.jobs import enqueue_event
from app.core.models import CallbackEvent, EventState
from app.events import queries, repository
from app.tokens.principal import Visible

log = logging.getLogger(__name__)

PRUNE_BATCH = 5000
ENQUEUE_TIMEOUT_SECONDS = 3.0


async def prune(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    processed_before: datetime,
    states: Sequence[EventState] = (EventState.PROCESSED,),
    stop_at: float | None = None,
) -> tuple[int, bool]:
    """Delete events in `states` processed before the cutoff, `PRUNE_BATCH` rows a transaction.

    `stop_at` (a `time.monotonic()` reading) stops starting new batches once passed. Answers how
    many were deleted and whether everything due was (False: stopped at `stop_at`).
    """
    total = 0
    while True:
        async with sessionmaker.begin() as session:
            deleted = await repository.prune(
                session, processed_before=processed_before, states=tuple(states), limit=PRUNE_BATCH
            )
        total += deleted
        if deleted < PRUNE_BATCH:
            return total, True
        if stop_at is not None and time.monotonic() >= stop_at:
            return total, False


@dataclass(frozen=True, slots=True)
class Replayed:
    replayed: list[int]
    unknown: list[int]
    not_enqueued: int = 0
    """Put back to `received` but not enqueued (Redis refused): the sweep enqueues them."""


async def replay_event(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    row_id: int,
    *,
    actor: Actor,
) -> CallbackEvent | None:
    """Put one event back to `received` (its own transaction), then enqueue it; answers the event
    as that transaction left it (as `app.events.queries` loads it), or None when it is unknown.

    The one implementation of a replay: the API, the console and the CLI come here. An enqueue that
    fails (or takes longer than `ENQUEUE_TIMEOUT_SECONDS`) costs nothing: the sweep finds the row,
    as for a callback. The audit entry (by `actor`) is written in the replay's transaction.
    """
    event, _enqueued = await _replay_one(sessionmaker, redis, row_id, actor=actor, detail=None)
    return event


async def _replay_one(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    row_id: int,
    *,
    actor: Actor,
    detail: dict[str, int] | None,
) -> tuple[CallbackEvent | None, bool]:
    async with sessionmaker.begin() as session:
        if not await repository.reset_for_replay(session, row_id):
            return None, False
        event = await queries.get_event(session, row_id)
        record(
            session,
            actor,
            Action.EVENT_REPLAY,
            str(row_id),
            now=utcnow(),
            detail=detail,
            project_id=event.project_id if event is not None else None,
        )
    try:
        async with asyncio.timeout(ENQUEUE_TIMEOUT_SECONDS):
            await enqueue_event(redis, row_id)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "replay not enqueued (%s); the sweep will pick it up",
            type(exc).__name__,
            extra={"row_id": row_id},
        )
        return event, False
    log.info("event replay requested", extra={"row_id": row_id})
    return event, True


async def replay(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    row_ids: Sequence[int],
    *,
    actor: Actor,
) -> Replayed:
    """`replay_event` for each of `row_ids`, in order (a bulk replay: the command line, the
    console), each with its audit entry by `actor`."""
    replayed, unknown, not_enqueued = [], [], 0
    bulk = {"bulk": len(row_ids)} if len(row_ids) > 1 else None
    for row_id in row_ids:
        event, enqueued = await _replay_one(sessionmaker, redis, row_id, actor=actor, detail=bulk)
        if event is None:
            unknown.append(row_id)
            continue
        replayed.append(row_id)
        not_enqueued += not enqueued
    return Replayed(replayed=replayed, unknown=unknown, not_enqueued=not_enqueued)


async def replay_failed(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    *,
    actor: Actor,
    visible: Visible = None,
) -> Replayed:
    """Replay every event `failed` now, of `visible`'s projects (None: every project)
    (`replay`): the console's "replay all failed" and the CLI's `replay --failed`."""
    async with sessionmaker() as session:
        row_ids = await repository.ids_in_state(session, EventState.FAILED, visible)
    return await replay(sessionmaker, redis, row_ids, actor=actor)
