"""SQL over `count_totals` and `count_deltas`. The triggers of migration 0009 write the deltas;
this module only reads them and folds them. Nothing here commits: callers own the transaction.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select, union_all
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


async def fold_batch(session: AsyncSession, limit: int) -> int:
    """Move up to `limit` deltas into the totals; answers how many were moved.

    The deltas are deleted and their sums added in the same transaction, by a DELETE that answers
    exactly the rows it removed: a delta committed meanwhile by another transaction is not among
    them and stays for the next fold, and two folds at once never move one delta twice (the second
    waits for the first's row locks, then finds those rows gone).
    """
    doomed = select(COUNT_DELTAS.c.id).order_by(COUNT_DELTAS.c.id).limit(limit).scalar_subquery()
    removed = await session.execute(
        COUNT_DELTAS.delete()
        .where(COUNT_DELTAS.c.id.in_(doomed))
        .returning(COUNT_DELTAS.c.project_id, COUNT_DELTAS.c.name, COUNT_DELTAS.c.delta)
    )
    sums: Counter[tuple[str, str]] = Counter()
    moved = 0
    for project_id, name, delta in removed:
        sums[project_id, name] += delta
        moved += 1
    changed = [
        {"project_id": project_id, "name": name, "value": value}
        for (project_id, name), value in sorted(sums.items())
        if value
    ]
    if changed:
        statement = postgresql.insert(COUNT_TOTALS)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[COUNT_TOTALS.c.project_id, COUNT_TOTALS.c.name],
                set_={"value": COUNT_TOTALS.c.value + statement.excluded.value},
            ),
            changed,
        )
    return moved


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
