"""Walking every page while rows are being written returns each row that existed before the walk
exactly once: none twice, none missing. Over real HTTP."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import HistorySource
from app.registrations.service import apply_snapshot
from app.sinch.schemas import SinchRegistration
from tests.api.conftest import put_registration, sinch_document
from tests.support.projects import settings_project

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
EXISTING = 1000
STATUSES = ("IN_QUEUE", "IN_PROGRESS", "APPROVED", "REJECTED")


def random_moment(rng: random.Random) -> datetime:
    return T0 + timedelta(seconds=rng.randrange(0, 86_400), microseconds=rng.randrange(1_000_000))


async def seed(sessionmaker: Sessions, rng: random.Random) -> dict[str, tuple[str, datetime]]:
    """EXISTING registrations applied as reconciliation would; answers id -> (status, time)."""
    rows: dict[str, tuple[str, datetime]] = {}
    async with sessionmaker.begin() as session:
        for _ in range(EXISTING):
            registration_id = str(uuid.UUID(int=rng.getrandbits(128)))
            status, at = rng.choice(STATUSES), random_moment(rng)
            document = sinch_document(registration_id, status, at=at)
            await apply_snapshot(
                session,
                SinchRegistration.from_document(document),
                project_id=await settings_project(session),
                source=HistorySource.RECONCILE,
                event_id=None,
                fetched_at=utcnow(),
                now=utcnow(),
            )
            rows[registration_id] = (status, at)
    return rows


async def keep_inserting(
    sessionmaker: Sessions, rng: random.Random, stop: asyncio.Event
) -> list[str]:
    """Insert new registrations, each in its own transaction, until told to stop. Random ids and
    times put them before and after wherever the walk's cursor is."""
    inserted: list[str] = []
    while not stop.is_set():
        registration_id = str(uuid.UUID(int=rng.getrandbits(128)))
        await put_registration(
            sessionmaker, registration_id, rng.choice(STATUSES), at=random_moment(rng)
        )
        inserted.append(registration_id)
        await asyncio.sleep(0.001)
    return inserted


@pytest.mark.parametrize(
    ("params", "limit"),
    [
        pytest.param({}, 37, id="by-id"),
        pytest.param({"status": "APPROVED"}, 11, id="by-id-filtered"),
        pytest.param({"updatedSince": "2026-01-01T00:00:00+00:00"}, 50, id="by-change"),
        pytest.param(
            {"updatedSince": "2026-01-01T06:00:00+00:00", "status": "REJECTED"},
            13,
            id="by-change-filtered",
        ),
    ],
)
async def test_walk_returns_each_existing_row_exactly_once_while_rows_are_inserted(
    v1: httpx.AsyncClient, sessionmaker: Sessions, params: dict[str, str], limit: int
) -> None:
    rng = random.Random(20260101)
    existing = await seed(sessionmaker, rng)
    since = datetime.fromisoformat(params.get("updatedSince", "2000-01-01T00:00:00+00:00"))
    expected = {
        registration_id
        for registration_id, (status, at) in existing.items()
        if params.get("status") in (None, status) and at >= since
    }
    assert len(expected) > 3 * limit

    stop = asyncio.Event()
    writer = asyncio.create_task(keep_inserting(sessionmaker, random.Random(7), stop))
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    try:
        while True:
            query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
            response = await v1.get("/v1/registrations", params=query)
            assert response.status_code == 200, response.text
            body = response.json()
            assert len(body["items"]) <= limit
            seen.extend(item["id"] for item in body["items"])
            pages += 1
            cursor = body["nextCursor"]
            if cursor is None:
                break
            await asyncio.sleep(0.002)  # let the writer in between pages
    finally:
        stop.set()
        inserted = await writer

    assert pages >= len(expected) // limit
    assert len(inserted) > 0, "nothing was inserted during the walk"
    counts = Counter(seen)
    assert [row for row, count in counts.items() if count > 1] == []
    assert expected - counts.keys() == set(), "rows that existed before the walk were missed"
    assert counts.keys() - expected <= set(inserted)
