"""The inbox repository: SQL over `callback_events`. Nothing here commits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import insert_for
from app.models import CallbackEvent, EventState

TABLE = cast(Table, CallbackEvent.__table__)  # Core, not ORM: the hot path inserts in bulk


@dataclass(frozen=True, slots=True)
class NewCallback:
    """A verified callback, ready to be kept."""

    dedup_key: str
    event_id: str | None
    registration_id: str | None
    body: bytes
    headers: dict[str, str]
    peer: str | None
    secret_index: int
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Stored:
    """What keeping a callback did: a new row (its id), or a count on an existing one."""

    row_id: int | None

    @property
    def duplicate(self) -> bool:
        return self.row_id is None


async def store_callbacks(
    connection: AsyncConnection, callbacks: Sequence[NewCallback]
) -> list[Stored]:
    """Keep `callbacks` in one statement; answer one `Stored` per callback, in order.

    A callback whose dedup key is already kept (by an earlier transaction, or earlier in this same
    batch) is a duplicate: no row is added and the kept row's `duplicate_count` grows instead.
    """
    first: dict[str, NewCallback] = {}
    seen = Counter[str]()
    for callback in callbacks:
        first.setdefault(callback.dedup_key, callback)
        seen[callback.dedup_key] += 1

    statement = (
        insert_for(connection.dialect.name, TABLE)
        .on_conflict_do_nothing(index_elements=[TABLE.c.dedup_key])
        .returning(TABLE.c.id, TABLE.c.dedup_key)
    )
    rows = [
        {
            "dedup_key": c.dedup_key,
            "event_id": c.event_id,
            "registration_id": c.registration_id,
            "body": c.body,
            "headers": c.headers,
            "peer": c.peer,
            "secret_index": c.secret_index,
            "received_at": c.received_at,
            "state": EventState.RECEIVED,
            "duplicate_count": 0,
        }
        for c in first.values()
    ]
    result = await connection.execute(statement, rows)
    inserted: dict[str, int] = {key: row_id for row_id, key in result.all()}

    bumps = [
        {"key": key, "n": count - (1 if key in inserted else 0)}
        for key, count in seen.items()
        if count - (1 if key in inserted else 0) > 0
    ]
    if bumps:
        await connection.execute(
            update(TABLE)
            .where(TABLE.c.dedup_key == bindparam("key"))
            .values(duplicate_count=TABLE.c.duplicate_count + bindparam("n")),
            bumps,
        )

    answers: list[Stored] = []
    for callback in callbacks:
        row_id = inserted.pop(callback.dedup_key, None)
        answers.append(Stored(row_id=row_id))
    return answers
