"""What the worker, the CLI and the API do with kept events beyond processing one: pruning them and
replaying them. One implementation for every door; each call owns its short transactions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from arq import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.actions import Action
from app.audit.repository import Actor, record
from app.db import utcnow
from app.events import repository
from app.jobs import enqueue_event
from app.models import EventState

PRUNE_BATCH = 5000


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


async def replay(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    row_ids: Sequence[int],
    *,
    actor: Actor,
) -> Replayed:
    """Put each event back to `received` (its own transaction, with its audit entry by `actor`)
    and enqueue it after the commit: a bulk replay (the command line, the console).

    An enqueue that fails costs nothing: the sweep finds the row, as for a callback.
    """
    replayed, unknown, not_enqueued = [], [], 0
    bulk = {"bulk": len(row_ids)} if len(row_ids) > 1 else None
    for row_id in row_ids:
        async with sessionmaker.begin() as session:
            found = await repository.reset_for_replay(session, row_id)
            if found:
                record(session, actor, Action.EVENT_REPLAY, str(row_id), now=utcnow(), detail=bulk)
        if not found:
            unknown.append(row_id)
            continue
        replayed.append(row_id)
        try:
            await enqueue_event(redis, row_id)
        except (RedisError, OSError, TimeoutError):
            not_enqueued += 1
    return Replayed(replayed=replayed, unknown=unknown, not_enqueued=not_enqueued)
