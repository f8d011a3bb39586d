"""SQL over `count_totals` and `count_deltas`. The triggers of migration 0009 write the deltas;
this module only reads them and folds them. Nothing here commits: callers own the transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, func, select, union_all
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import COUNT_DELTAS, COUNT_TOTALS
from app.projects.queries import within
from app.tokens.principal import Visible

HOUR_PREFIX = "h:"


async def current(session: AsyncSession, projects: Visible) -> dict[str, int]:
    """Every count of `projects` (None: of every project), summed, as it stands: its
    total plus its unfolded deltas, in ONE statement, so that a fold committing meanwhile is seen
    entirely or not at all (one snapshot). Costs the number of names plus the deltas written since
    the last fold, not the number of rows counted."""
    totals = within(
        select(COUNT_TOTALS.c.name, COUNT_TOTALS.c.value.label("v")),
        COUNT_TOTALS.c.project_id,
        projects,
    )
    deltas = within(
        select(COUNT_DELTAS.c.name, COUNT_DELTAS.c.delta.label("v")),
        COUNT_DELTAS.c.project_id,
        projects,
    )
    parts = union_all(totals, deltas).subquery()
    rows = await session.execute(select(parts.c.name, func.sum(parts.c.v)).group_by(parts.c.name))
    return {name: int(value) for name, value in rows}


def _fold_statement() -> Select[Any]:
    """`fold_batch`'s one statement: DELETE the first `limit` deltas answering what it removed,
    sum those per (project, name), upsert the sums (in key order: two folds lock the totals in
    one order) and answer how many deltas were moved."""
    doomed = (
        select(COUNT_DELTAS.c.id)
        .order_by(COUNT_DELTAS.c.id)
        .limit(bindparam("limit"))
        .scalar_subquery()
    )
    removed = (
        COUNT_DELTAS.delete()
        .where(COUNT_DELTAS.c.id.in_(doomed))
        .returning(COUNT_DELTAS.c.project_id, COUNT_DELTAS.c.name, COUNT_DELTAS.c.delta)
        .cte("removed")
    )
    sums = (
        select(
            removed.c.project_id,
            removed.c.name,
            func.sum(removed.c.delta).label("value"),
            func.count().label("moved"),
        )
        .group_by(removed.c.project_id, removed.c.name)
        .cte("sums")
    )
    upsert = postgresql.insert(COUNT_TOTALS).from_select(
        ["project_id", "name", "value"],
        select(sums.c.project_id, sums.c.name, sums.c.value)
        .where(sums.c.value != 0)
        .order_by(sums.c.project_id, sums.c.name),
    )
    upserted = upsert.on_conflict_do_update(
        index_elements=[COUNT_TOTALS.c.project_id, COUNT_TOTALS.c.name],
        set_={"value": COUNT_TOTALS.c.value + upsert.excluded.value},
    ).cte("upserted")
    return select(func.coalesce(func.sum(sums.c.moved), 0)).add_cte(upserted)


_FOLD = _fold_statement()


async def fold_batch(session: AsyncSession, limit: int) -> int:
    """Move up to `limit` deltas into the totals; answers how many were moved.

    The deltas are deleted and their sums added in the same statement, by a DELETE that answers
    exactly the rows it removed: a delta committed meanwhile by another transaction is not among
    them and stays for the next fold, and two folds at once never move one delta twice (the second
    waits for the first's row locks, then finds those rows gone). PostgreSQL sums them: read into
    the worker, 20,000 deltas held its event loop, and the callbacks' jobs, for tens of ms.
    """
    moved = await session.scalar(_FOLD, {"limit": limit})
    return int(moved or 0)


async def tidy(session: AsyncSession, oldest_hour_kept: str) -> None:
    """Forget hourly totals before `oldest_hour_kept` (`YYYY-MM-DDTHH`) and counts now zero (a
    status no registration holds any more), so the totals stay a few hundred rows."""
    await session.execute(
        COUNT_TOTALS.delete().where(
            (COUNT_TOTALS.c.value == 0)
            | (
                (COUNT_TOTALS.c.name >= HOUR_PREFIX)
                & (COUNT_TOTALS.c.name < HOUR_PREFIX + oldest_hour_kept)
            )
        )
    )
