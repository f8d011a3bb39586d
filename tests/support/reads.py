"""Reading the service's tables from tests, through the service's own engine factory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import create_engine
from app.core.models import Base, CallbackEvent, Registration, RegistrationHistory
from app.core.settings import Settings


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


FACTS_LIMIT_SECONDS = 60.0


async def wait_for_facts(settings: Settings) -> None:
    """Wait (bounded) until no registration waits for its facts fetch, a job deferred on purpose
    (app/core/jobs.py, FACTS_DEFER_SECONDS), so that facts can be compared with the truth."""
    deadline = time.monotonic() + FACTS_LIMIT_SECONDS
    while True:
        waiting = [r.id for r in await registrations(settings) if r.facts_due_at is not None]
        if not waiting:
            return
        assert time.monotonic() < deadline, f"facts never fetched for {waiting}"
        await asyncio.sleep(0.1)


def sinch_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


def facts_as_kept(registration: Any) -> dict[str, Any]:
    """A registration row's facts, shaped like the simulator's oracle (`SimulatorControl.facts`)."""
    reason = (
        None
        if registration.reason_message is None
        else {
            "message": registration.reason_message,
            "state": registration.reason_state,
            "at": registration.reason_at,
        }
    )
    return {
        "senderIds": registration.sender_ids,
        "marketCode": registration.market_code,
        "policyId": registration.policy_id,
        "tags": registration.tags,
        "etaDate": registration.eta_date.isoformat() if registration.eta_date else None,
        "price": registration.price,
        "statusSince": registration.status_since,
        "reason": reason,
    }


def true_facts(oracle: dict[str, Any]) -> dict[str, Any]:
    """The simulator's oracle with its times read as the service keeps them."""
    reason = oracle["reason"]
    return {
        **oracle,
        "statusSince": sinch_time(oracle["statusSince"]),
        "reason": None if reason is None else {**reason, "at": sinch_time(reason["at"])},
    }
