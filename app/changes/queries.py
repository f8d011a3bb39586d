"""Read-side SQL of the change feed. Never writes.

Only numbered changes are served, in `seq` order; `seq` has no gaps (repository docstring), so
the oldest kept number tells whether a cursor still names a kept position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import RegistrationChange


@dataclass(frozen=True, slots=True)
class Bounds:
    oldest: int | None
    """The lowest `seq` kept; None when no change was ever numbered."""
    newest: int | None


async def bounds(session: AsyncSession) -> Bounds:
    row = (
        await session.execute(
            select(func.min(RegistrationChange.seq), func.max(RegistrationChange.seq))
        )
    ).one()
    return Bounds(oldest=row[0], newest=row[1])


def page_statement(after: int, limit: int) -> Select[RegistrationChange]:
    return (
        select(RegistrationChange)
        .where(RegistrationChange.seq > after)
        .order_by(RegistrationChange.seq)
        .limit(limit)
    )


async def page(session: AsyncSession, *, after: int, limit: int) -> Sequence[RegistrationChange]:
    """Up to `limit` changes numbered after `after`, oldest first."""
    return (await session.execute(page_statement(after, limit))).scalars().all()
