"""`/v1/events`: list, show and replay kept callbacks, over real HTTP.

Events reach the inbox through the real callback endpoint and are processed by the steps the
worker runs (app.events.processing), so every state is one the service itself produces.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import driver_connection, utcnow
from app.core.jobs import event_job_id
from app.core.models import EventState
from app.core.settings import Settings
from app.events import processing
from app.main import create_app
from app.registrations.decision import DEFAULT_SKEW
from tests.api.conftest import AUTH, assert_problem, post_callback, put_registration
from tests.api.test_registrations import forged
from tests.conftest import make_settings
from tests.support.reads import events
from tests.support.servers import free_port, serve

Sessions = async_sessionmaker[AsyncSession]
ROOT = Path(__file__).resolve().parents[2]
FIELDS = {
    "id",
    "eventId",
    "projectId",
    "dedupKey",
    "registrationId",
    "claimedStatus",
    "claimedAt",
    "state",
    "outcome",
    "attempts",
    "lastError",
    "receivedAt",
    "processedAt",
    "duplicateCount",
}


def callback(event_id: str | None, registration_id: str, status: str, at: str) -> bytes:
    document = {
        "eventType": "REGISTRATION_STATUS_UPDATE",
        "resourceId": registration_id,
        "resourceType": "REGISTRATION",
        "status": status,
        "createTime": at,
    }
    if event_id is not None:
        document["eventId"] = event_id
    return json.dumps(document).encode()


async def kept_ids(settings: Settings) -> list[int]:
    return [event.id for event in await events(settings)]


async def process(sessionmaker: Sessions, row_id: int) -> None:
    async with sessionmaker() as session:
        driver = await driver_connection(await session.connection())
        step = await processing.begin(driver, row_id, now=utcnow(), skew=DEFAULT_SKEW)
    assert isinstance(step, processing.Finished), step


async def fail(sessionmaker: Sessions, row_id: int) -> None:
    async with sessionmaker.begin() as session:
        await processing.give_up(
            session,
            row_id,
            state=EventState.FAILED,
            outcome="failed:retries_exhausted",
            error="Sinch get registration answered 503",
            now=utcnow(),
        )


@pytest.fixture
async def four_events(
    api: httpx.AsyncClient, settings: Settings, sessionmaker: Sessions
) -> dict[str, int]:
    """One event in each state, oldest first: processed, received, failed, invalid."""
    await put_registration(sessionmaker, "reg-a", "IN_QUEUE", at=datetime(2026, 1, 1, tzinfo=UTC))
    await post_callback(api, callback("e-1", "reg-a", "IN_PROGRESS", "2026-01-01T11:00:00"))
    await post_callback(api, callback("e-1", "reg-a", "IN_PROGRESS", "2026-01-01T11:00:00"))
    await post_callback(api, callback(None, "reg-b", "APPROVED", "2026-01-01T11:00:00"))
    await post_callback(api, callback("e-3", "reg-a", "APPROVED", "2026-01-01T12:00:00"))
    await post_callback(api, b"not json at all")
    processed, received, failed, invalid = await kept_ids(settings)
    await process(sessionmaker, processed)
    await fail(sessionmaker, failed)
    await process(sessionmaker, invalid)
    return {"processed": processed, "received": received, "failed": failed, "invalid": invalid}


async def test_show_one_event(v1: httpx.AsyncClient, four_events: dict[str, int]) -> None:
    response = await v1.get(f"/v1/events/{four_events['processed']}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == FIELDS  # never the body or the headers
    assert body["id"] == four_events["processed"]
    assert body["eventId"] == body["dedupKey"] == "e-1"
    assert body["registrationId"] == "reg-a"
    # What the body claims, as the worker read it.
    assert body["claimedStatus"] == "IN_PROGRESS"
    assert body["claimedAt"] == "2026-01-01T11:00:00+00:00"
    assert body["state"] == "processed"
    assert body["outcome"] == "applied:trusted"
    assert body["attempts"] == 1
    assert body["lastError"] is None
    assert body["duplicateCount"] == 1
    assert body["receivedAt"].endswith("+00:00")
    assert body["processedAt"].endswith("+00:00")
    assert body["processedAt"] >= body["receivedAt"]

    derived = (await v1.get(f"/v1/events/{four_events['received']}")).json()
    # No id in the body: Sinch's event id is null; the dedup key is the body's digest.
    assert derived["eventId"] is None
    assert derived["dedupKey"].startswith("sha256:")
    assert (derived["state"], derived["outcome"], derived["processedAt"]) == (
        "received",
        None,
        None,
    )
    failed = (await v1.get(f"/v1/events/{four_events['failed']}")).json()
    assert (failed["state"], failed["lastError"]) == (
        "failed",
        "Sinch get registration answered 503",
    )
    assert (failed["claimedStatus"], failed["claimedAt"]) == (
        "APPROVED",
        "2026-01-01T12:00:00+00:00",
    )
    invalid = (await v1.get(f"/v1/events/{four_events['invalid']}")).json()
    assert (invalid["state"], invalid["registrationId"]) == ("invalid", None)
    assert (invalid["claimedStatus"], invalid["claimedAt"]) == (None, None)


async def test_duplicate_count_and_ignored_duplicate_count_different_things(
    v1: httpx.AsyncClient, api: httpx.AsyncClient, settings: Settings, sessionmaker: Sessions
) -> None:
    """`duplicateCount`: redeliveries of one event (same dedup key), merged on arrival.
    `ignored:duplicate`: another event (another dedup key) claiming what is already held."""
    await put_registration(sessionmaker, "reg-d", "IN_QUEUE", at=datetime(2026, 1, 1, tzinfo=UTC))
    first = callback("e-10", "reg-d", "IN_PROGRESS", "2026-01-01T11:00:00")
    for _ in range(3):
        await post_callback(api, first)
    await post_callback(api, callback("e-11", "reg-d", "IN_PROGRESS", "2026-01-01T11:00:00"))
    original, again = await kept_ids(settings)
    await process(sessionmaker, original)
    await process(sessionmaker, again)

    listed = (await v1.get("/v1/events", params={"registrationId": "reg-d"})).json()["items"]
    summary = [
        (e["eventId"], e["claimedStatus"], e["claimedAt"], e["outcome"], e["duplicateCount"])
        for e in listed
    ]
    assert summary == [
        ("e-11", "IN_PROGRESS", "2026-01-01T11:00:00+00:00", "ignored:duplicate", 0),
        ("e-10", "IN_PROGRESS", "2026-01-01T11:00:00+00:00", "applied:trusted", 2),
    ]


async def test_outcome_description_names_every_outcome_of_the_docs(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    fields = document["components"]["schemas"]["EventOut"]["properties"]
    described = fields["outcome"]["description"]
    table = (ROOT / "docs" / "api.md").read_text().split("### Outcomes", 1)[1]
    outcomes = re.findall(r"^\| `([a-z_]+:[a-z_]+)` \|", table, flags=re.MULTILINE)
    assert len(outcomes) == 17, outcomes
    assert [o for o in outcomes if f"`{o}`" not in described] == []
    assert "ignored:duplicate" in fields["duplicateCount"]["description"]
    assert {"claimedStatus", "claimedAt"} <= set(fields)


async def test_unknown_event_is_404(v1: httpx.AsyncClient) -> None:
    assert_problem(await v1.get("/v1/events/999999"), 404)
    assert_problem(await v1.post("/v1/events/999999/replay"), 404)


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", str(2**63)])
async def test_bad_event_ids_are_422(v1: httpx.AsyncClient, bad: str) -> None:
    assert_problem(await v1.get(f"/v1/events/{bad}"), 422)
    assert_problem(await v1.post(f"/v1/events/{bad}/replay"), 422)


async def test_list_newest_first_with_filters_and_pages(
    v1: httpx.AsyncClient, four_events: dict[str, int]
) -> None:
    async def walk(**params: object) -> list[int]:
        seen: list[int] = []
        cursor: str | None = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            response = await v1.get("/v1/events", params=query)
            assert response.status_code == 200, response.text
            body = response.json()
            assert all(set(item) == FIELDS for item in body["items"])
            seen.extend(item["id"] for item in body["items"])
            cursor = body["nextCursor"]
            if cursor is None:
                return seen

    newest_first = sorted(four_events.values(), reverse=True)
    assert await walk() == newest_first
    assert await walk(limit=1) == newest_first
    assert await walk(limit=3) == newest_first
    for state, row_id in four_events.items():
        assert await walk(state=state) == [row_id]
    assert await walk(registrationId="reg-a", limit=1) == [
        four_events["failed"],
        four_events["processed"],
    ]
    assert await walk(registrationId="reg-a", state="failed") == [four_events["failed"]]
    assert await walk(registrationId="nobody") == []


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"state": "done"}, 422),
        ({"limit": "0"}, 422),
        ({"limit": "501"}, 422),
        ({"registrationId": "a\x01b"}, 422),
        ({"cursor": "%%%"}, 422),
        ({"cursor": forged({"id": "7"}) + "x"}, 422),
        ({"cursor": forged({"id": 0})}, 422),
        ({"cursor": forged({"id": 2**63})}, 422),
        ({"cursor": forged({"id": "reg-1"})}, 422),
    ],
)
async def test_bad_list_parameters_are_problems(
    v1: httpx.AsyncClient, params: dict[str, str], status: int
) -> None:
    assert_problem(await v1.get("/v1/events", params=params), status)


async def test_replay_resets_and_enqueues(
    v1: httpx.AsyncClient, settings: Settings, four_events: dict[str, int]
) -> None:
    row_id = four_events["failed"]
    queue = redis.asyncio.Redis.from_url(settings.redis_url)
    try:
        await queue.flushdb()  # forget the jobs the callback endpoint queued on arrival
        response = await v1.post(f"/v1/events/{row_id}/replay")
        assert response.status_code == 202, response.text
        body = response.json()
        assert set(body) == FIELDS
        assert (body["id"], body["state"], body["outcome"], body["processedAt"]) == (
            row_id,
            "received",
            None,
            None,
        )
        assert await queue.exists(f"arq:job:{event_job_id(row_id)}") == 1
    finally:
        await queue.aclose()
    assert (await v1.get(f"/v1/events/{row_id}")).json() == body

    processed = (await v1.post(f"/v1/events/{four_events['processed']}/replay")).json()
    assert processed["state"] == "received"


async def test_replay_answers_202_while_redis_is_down(
    database_url: str, sessionmaker: Sessions
) -> None:
    settings = make_settings(database_url, f"redis://127.0.0.1:{free_port()}/0")
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        await post_callback(client, callback("e-9", "reg-z", "APPROVED", "2026-01-01T11:00:00"))
        [row_id] = await kept_ids(settings)
        await fail(sessionmaker, row_id)
        response = await client.post(f"/v1/events/{row_id}/replay", headers=AUTH)
        assert response.status_code == 202
        assert response.json()["state"] == "received"  # the sweep will find it
