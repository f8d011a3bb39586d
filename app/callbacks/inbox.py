"""The inbox repository: SQL over `callback_events`. Nothing here commits."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import insert_for
from app.models import CALLBACK_EVENTS, EventState

TABLE = CALLBACK_EVENTS  # Core, not ORM: the hot path inserts in bulk


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


# PostgreSQL's fast path: the same two statements as `store_callbacks`, written for asyncpg with
# one array per column, so a batch costs one round trip (two with duplicates) and no per-row work in
# SQLAlchemy. The endpoint tests run on both databases, so both paths answer to the same tests.
_PG_INSERT = """
INSERT INTO callback_events (dedup_key, event_id, registration_id, body, headers, peer,
                             secret_index, received_at, state, duplicate_count, attempts)
SELECT t.dedup_key, t.event_id, t.registration_id, t.body, t.headers::json, t.peer,
       t.secret_index, t.received_at, 'received', 0, 0
FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::bytea[], $5::text[], $6::varchar[],
            $7::smallint[], $8::timestamptz[])
     AS t(dedup_key, event_id, registration_id, body, headers, peer, secret_index, received_at)
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id, dedup_key
"""
_PG_BUMP = """
UPDATE callback_events SET duplicate_count = duplicate_count + t.n
FROM unnest($1::varchar[], $2::int[]) AS t(k, n)
WHERE dedup_key = t.k
"""


async def store_callbacks_asyncpg(
    connection: Any, callbacks: Sequence[NewCallback]
) -> list[Stored]:
    """`store_callbacks` on a raw asyncpg connection outside any transaction: each statement
    commits on its own.

    No transaction is needed: the INSERT is atomic and durable when it returns, and the duplicate
    counts are bumped afterwards. Should that UPDATE fail, this raises and every caller of the
    batch answers 503 although the new rows are kept; Sinch's retry of them is then counted as a
    duplicate. A 200 is never given for a row that is not kept.
    """
    first: dict[str, NewCallback] = {}
    seen = Counter[str]()
    for callback in callbacks:
        first.setdefault(callback.dedup_key, callback)
        seen[callback.dedup_key] += 1
    rows = list(first.values())
    inserted: dict[str, int] = {
        key: row_id
        for row_id, key in await connection.fetch(
            _PG_INSERT,
            [c.dedup_key for c in rows],
            [c.event_id for c in rows],
            [c.registration_id for c in rows],
            [c.body for c in rows],
            [json.dumps(c.headers) for c in rows],
            [c.peer for c in rows],
            [c.secret_index for c in rows],
            [c.received_at for c in rows],
        )
    }
    bumps = {
        key: count - (1 if key in inserted else 0)
        for key, count in seen.items()
        if count - (1 if key in inserted else 0) > 0
    }
    if bumps:
        await connection.execute(_PG_BUMP, list(bumps), list(bumps.values()))
    return [Stored(row_id=inserted.pop(callback.dedup_key, None)) for callback in callbacks]
