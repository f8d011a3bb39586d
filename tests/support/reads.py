"""Reading the service's tables from tests, through the service's own engine factory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import create_engine
from app.models import Base, CallbackEvent, Registration, RegistrationHistory
from app.settings import Settings


async def rows(settings: Settings, model: type[Base], *order_by: Any) -> Sequence[Any]:
    engine = create_engine(settings)
    try:
        async with AsyncSession(engine) as session:
            result = await session.execute(select(model).order_by(*order_by))
            return result.scalars().all()
    finally:
        await engine.dispose()


async def events(settings: Settings) -> Sequence[Any]:
    return await rows(settings, CallbackEvent, CallbackEvent.id)


async def registrations(settings: Settings) -> Sequence[Any]:
    return await rows(settings, Registration, Registration.id)


async def history(settings: Settings) -> Sequence[Any]:
    return await rows(
        settings,
        RegistrationHistory,
        RegistrationHistory.registration_id,
        RegistrationHistory.id,
    )
