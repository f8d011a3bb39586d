"""The change feed over real HTTP: what is recorded (and what is not), waking
a waiting reader from another process, working without the Redis channel, the order of changes
committed out of order, retention (410), the SSE stream and its resume.

Writes go through the service's own code (`apply_snapshot`) on an engine of the test's own, and
are numbered the way a worker or the CLI numbers them (`number_and_publish`): the API serving the
feed is another process as far as the feed is concerned.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes import repository as changes
from app.changes.sequencer import number_and_publish
from app.core.db import utcnow
from app.core.models import HistorySource, RegistrationChange
from app.core.settings import Settings
from app.main import create_app
from app.registrations.service import apply_snapshot
from app.sinch.schemas import SinchRegistration
from tests.api.conftest import AUTH, assert_problem
from tests.support.projects import settings_project
from tests.support.servers import serve

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
WAIT_LIMIT = 20.0  # seconds: a bound on every wait here; a pass never comes near it


def document(registration_id: str, status: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "id": registration_id,
        "status": status,
        "registrationType": "ALPHANUMERIC_SENDER_ID",
        "updateTime": at.replace(tzinfo=None).isoformat(),
        "requestDetails": [{"senderIdDetails": [{"senderId": "ACME"}]}],
        **extra,
    }


async def put(session: AsyncSession, doc: dict[str, Any]) -> None:
    await apply_snapshot(
        session,
        SinchRegistration.from_document(doc),
        project_id=await settings_project(session),
        source=HistorySource.REFETCH,
        event_id=None,
        fetched_at=utcnow(),
        now=utcnow(),
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def write(sessionmaker: Sessions, redis: Redis | None, *docs: dict[str, Any]) -> None:
    """Apply `docs`, each in its own transaction, then number and announce them."""
    for doc in docs:
        async with sessionmaker.begin() as session:
            await put(session, doc)
    await number_and_publish(sessionmaker, redis)


async def feed(v1: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await v1.get("/v1/changes", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_every_change_is_recorded_once_and_a_no_change_not_at_all(
    v1: httpx.AsyncClient, sessionmaker: Sessions, redis: Redis
) -> None:
    later = T0 + timedelta(minutes=5)
    await write(
        sessionmaker,
        redis,
        document("reg-1", "IN_QUEUE", T0),
        document("reg-1", "IN_QUEUE", later),  # a later document saying the same: no change
        document("reg-1", "IN_QUEUE", later, tags=["#new"]),  # a fact changed
        document("reg-1", "APPROVED", later + timedelta(minutes=1), tags=["#new"]),
    )
    body = await feed(v1)
    items = body["items"]
    assert [(i["seq"], i["kind"], i["fromStatus"], i["toStatus"]) for i in items] == [
        (1, "status", None, "IN_QUEUE"),
        (2, "details", "IN_QUEUE", "IN_QUEUE"),
        (3, "status", "IN_QUEUE", "APPROVED"),
    ]
    assert [i["registration"]["tags"] for i in items] == [[], ["#new"], ["#new"]]
    assert all(i["source"] == "refetch" and i["registrationId"] == "reg-1" for i in items)
    assert body["nextCursor"] == "3"
    # The newest change holds exactly what the registration answers (without Sinch's document).
    answer = (await v1.get("/v1/registrations/reg-1")).json()
    answer.pop("sinch")
    answer.pop("forecast")  # it moves with time, not with changes: no part of a change's image
    answer.pop("needsAction")  # derived from the status and reason the image carries
    assert items[-1]["registration"] == answer
    # Nothing new: the same position back.
    assert await feed(v1, cursor="3") == {"items": [], "nextCursor": "3"}
    assert (await feed(v1, cursor="latest"))["nextCursor"] == "3"
    assert [i["seq"] for i in (await feed(v1, cursor="1", limit=1))["items"]] == [2]


async def test_a_waiting_reader_is_woken_by_a_commit_of_another_process(
    v1: httpx.AsyncClient, sessionmaker: Sessions, redis: Redis
) -> None:
    await write(sessionmaker, redis, document("reg-1", "IN_QUEUE", T0))
    waiting = asyncio.create_task(feed(v1, cursor="1", wait=WAIT_LIMIT))
    await asyncio.sleep(0.2)  # the request is in, waiting
    assert not waiting.done()
    await write(sessionmaker, redis, document("reg-1", "IN_PROGRESS", T0 + timedelta(1)))
    async with asyncio.timeout(WAIT_LIMIT):
        body = await waiting
    assert [(i["seq"], i["toStatus"]) for i in body["items"]] == [(2, "IN_PROGRESS")]


async def test_without_the_redis_channel_readers_still_get_every_change(
    database_url: str, sessionmaker: Sessions, settings: Settings
) -> None:
    # Nothing listens on this port: the API's subscription never connects, so it polls.
    dead = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with (
        serve(create_app(dead)) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=30) as v1,
    ):
        waiting = asyncio.create_task(feed(v1, cursor="latest", wait=WAIT_LIMIT))
        await asyncio.sleep(0.2)
        await write(sessionmaker, None, document("reg-9", "IN_QUEUE", T0))
        async with asyncio.timeout(WAIT_LIMIT):
            body = await waiting
    assert [i["registrationId"] for i in body["items"]] == ["reg-9"]


async def test_a_change_committed_later_is_never_numbered_below_one_already_served(
    v1: httpx.AsyncClient, sessionmaker: Sessions, redis: Redis
) -> None:
    """Transaction A records its change first (lower id) but commits after B: a reader that was
    given B's change never sees A's appear below it."""
    first = sessionmaker()
    await first.begin()
    try:
        await put(first, document("reg-a", "IN_QUEUE", T0))  # recorded, not committed
        await write(sessionmaker, redis, document("reg-b", "IN_QUEUE", T0))  # B commits first
        served = (await feed(v1))["items"]
        assert [(i["seq"], i["registrationId"]) for i in served] == [(1, "reg-b")]
        await first.commit()
    finally:
        await first.close()
    await number_and_publish(sessionmaker, redis)
    after = (await feed(v1, cursor="1"))["items"]
    assert [(i["seq"], i["registrationId"]) for i in after] == [(2, "reg-a")]


async def test_a_cursor_older_than_what_is_kept_is_410_with_the_way_back(
    v1: httpx.AsyncClient, sessionmaker: Sessions, redis: Redis
) -> None:
    await write(
        sessionmaker,
        redis,
        *(
            document("reg-1", s, T0 + timedelta(minutes=n))
            for n, s in enumerate(["IN_QUEUE", "IN_PROGRESS", "APPROVED"])
        ),
    )
    async with sessionmaker.begin() as session:
        pruned = await changes.prune(
            session, recorded_before=utcnow() + timedelta(days=1), limit=100
        )
    assert pruned == 2  # the newest is kept: the numbering goes on from it
    body = assert_problem(await v1.get("/v1/changes", params={"cursor": "1"}), 410)
    assert "cursor=latest" in body["detail"] and "/v1/registrations" in body["detail"]
    assert_problem(await v1.get("/v1/changes/stream", params={"cursor": "0"}), 410)
    assert [i["seq"] for i in (await feed(v1))["items"]] == [3]  # from the oldest kept
    assert (await feed(v1, cursor="2"))["items"][0]["seq"] == 3


@pytest.mark.parametrize("cursor", ["abc", "-1", "1" * 19, "1.5", "", "latest2"])
async def test_a_malformed_cursor_is_422(v1: httpx.AsyncClient, cursor: str) -> None:
    assert_problem(await v1.get("/v1/changes", params={"cursor": cursor}), 422)
    assert_problem(await v1.get("/v1/changes", params={"wait": 31}), 422)


async def sse_events(response: httpx.Response, count: int) -> list[dict[str, str]]:
    """The first `count` events of a stream, each as its fields (comment lines skipped)."""
    found: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if fields:
                found.append(fields)
                fields = {}
                if len(found) == count:
                    return found
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    return found


async def test_the_stream_sends_each_change_as_an_event_and_resumes_after_the_last_id(
    v1: httpx.AsyncClient, sessionmaker: Sessions, redis: Redis
) -> None:
    statuses = ["IN_QUEUE", "IN_PROGRESS", "PENDING", "IN_PROGRESS", "APPROVED"]
    docs = [document("reg-1", s, T0 + timedelta(minutes=n)) for n, s in enumerate(statuses)]
    await write(sessionmaker, redis, *docs[:2])
    async with asyncio.timeout(WAIT_LIMIT):
        async with v1.stream("GET", "/v1/changes/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = await sse_events(response, 2)
        await write(sessionmaker, redis, *docs[2:])  # while nobody listens
        headers = {"Last-Event-ID": first[-1]["id"]}
        async with v1.stream("GET", "/v1/changes/stream", headers=headers) as response:
            rest = await sse_events(response, 3)
    events = first + rest
    assert [e["id"] for e in events] == ["1", "2", "3", "4", "5"]
    assert {e["event"] for e in events} == {"change"}
    assert [json.loads(e["data"])["toStatus"] for e in events] == statuses


async def test_pruning_takes_a_prefix_even_when_clocks_disagree(
    v1: httpx.AsyncClient, sessionmaker: Sessions, redis: Redis
) -> None:
    statuses = ["IN_QUEUE", "IN_PROGRESS", "PENDING", "APPROVED"]
    await write(
        sessionmaker,
        redis,
        *(document("reg-1", s, T0 + timedelta(minutes=n)) for n, s in enumerate(statuses)),
    )
    # Change 2 was recorded by a process whose clock ran behind: older than change 1.
    async with sessionmaker.begin() as session:
        await session.execute(
            update(RegistrationChange)
            .where(RegistrationChange.seq == 2)
            .values(recorded_at=utcnow() - timedelta(days=40))
        )
        pruned = await changes.prune(
            session, recorded_before=utcnow() - timedelta(days=30), limit=100
        )
    assert pruned == 2  # 1 and 2: never 2 alone, which would leave a hole behind 1
    assert [i["seq"] for i in (await feed(v1))["items"]] == [3, 4]
    assert_problem(await v1.get("/v1/changes", params={"cursor": "1"}), 410)
    assert [i["seq"] for i in (await feed(v1, cursor="2"))["items"]] == [3, 4]


async def test_a_cursor_beyond_the_newest_change_is_410(
    v1: httpx.AsyncClient, sessionmaker: Sessions, redis: Redis
) -> None:
    await write(sessionmaker, redis, document("reg-1", "IN_QUEUE", T0))
    body = assert_problem(await v1.get("/v1/changes", params={"cursor": "7"}), 410)
    assert "beyond the newest" in body["detail"]
    assert (await feed(v1, cursor="1")) == {"items": [], "nextCursor": "1"}
