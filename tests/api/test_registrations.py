"""`/v1/registrations`: get, list (filters, cursors), history and refresh, over real HTTP, on both
databases. Data goes in as the worker puts it: `apply_snapshot`, or a refresh from the simulator."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import HistorySource, Registration
from app.main import create_app
from app.registrations.service import apply_snapshot
from app.sinch.schemas import SinchRegistration
from devtools.simulator import SimulatorControl
from tests.api.conftest import AUTH, assert_problem, put_registration, sinch_document
from tests.conftest import make_settings
from tests.support.projects import settings_project
from tests.support.servers import serve

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value  # an explicit offset, UTC
    assert value.endswith("+00:00"), value
    return parsed


async def test_get_answers_the_local_copy(v1: httpx.AsyncClient, sessionmaker: Sessions) -> None:
    await put_registration(sessionmaker, "reg-1", "IN_QUEUE", at=T0)
    response = await v1.get("/v1/registrations/reg-1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {
        "id",
        "projectId",
        "status",
        "registrationType",
        "statusChangedAt",
        "lastSyncedAt",
        "sinch",
        "createdAt",
        "updatedAt",
        "senderIds",
        "marketCode",
        "policyId",
        "tags",
        "etaDate",
        "price",
        "statusSince",
        "reason",
        "forecast",
        "needsAction",
    }
    assert body["forecast"] is None  # until the worker's first forecasts run after it came
    assert body["needsAction"] is None  # IN_QUEUE waits on Sinch, not on the customer
    assert body["id"] == "reg-1"
    assert body["status"] == "IN_QUEUE"
    assert body["registrationType"] == "ALPHANUMERIC_SENDER_ID"
    assert iso(body["statusChangedAt"]) == T0
    assert iso(body["lastSyncedAt"]) <= iso(body["updatedAt"])
    iso(body["createdAt"])
    assert body["sinch"]["senderId"] == "ACME"
    assert body["sinch"]["updateTime"] == "2026-01-01T10:00:00"


async def test_ids_with_reserved_characters_round_trip(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    odd = "01H?x=1&y#z é"
    await put_registration(sessionmaker, odd)
    response = await v1.get(f"/v1/registrations/{quote(odd, safe='')}")
    assert response.status_code == 200
    assert response.json()["id"] == odd


async def test_get_unknown_is_404(v1: httpx.AsyncClient) -> None:
    body = assert_problem(await v1.get("/v1/registrations/nope"), 404)
    assert body["type"] == "about:blank"


async def test_list_filters_and_pages(v1: httpx.AsyncClient, sessionmaker: Sessions) -> None:
    for number in range(7):
        await put_registration(
            sessionmaker,
            f"reg-{number}",
            "APPROVED" if number % 2 else "IN_QUEUE",
            at=T0 + timedelta(minutes=10 - number),
            registration_type="LONG_NUMBER" if number < 3 else "ALPHANUMERIC_SENDER_ID",
        )

    async def walk(**params: object) -> list[str]:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            response = await v1.get("/v1/registrations", params=query)
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body) == {"items", "nextCursor"}
            assert len(body["items"]) <= int(str(params.get("limit", 50)))
            seen.extend(item["id"] for item in body["items"])
            cursor = body["nextCursor"]
            if cursor is None:
                return seen

    everything = [f"reg-{n}" for n in range(7)]
    assert await walk() == everything
    assert await walk(limit=2) == everything
    assert await walk(limit=7) == everything
    assert await walk(status="APPROVED", limit=1) == ["reg-1", "reg-3", "reg-5"]
    assert await walk(registrationType="LONG_NUMBER") == ["reg-0", "reg-1", "reg-2"]
    assert await walk(status="IN_QUEUE", registrationType="LONG_NUMBER") == ["reg-0", "reg-2"]
    # updatedSince orders by (statusChangedAt, id): reg-n changed at T0 + (10 - n) minutes.
    since = (T0 + timedelta(minutes=5)).isoformat()
    newest_six = ["reg-5", "reg-4", "reg-3", "reg-2", "reg-1", "reg-0"]
    assert await walk(updatedSince=since, limit=2) == newest_six
    assert await walk(updatedSince="2026-01-01T05:05:00-05:00") == newest_six
    assert await walk(updatedSince="2026-01-01T10:05:00Z", limit=1) == newest_six
    assert await walk(updatedSince=since, status="APPROVED") == ["reg-5", "reg-3", "reg-1"]
    assert await walk(updatedSince=since, registrationType="LONG_NUMBER", limit=1) == [
        "reg-2",
        "reg-1",
        "reg-0",
    ]
    later = (T0 + timedelta(minutes=9, microseconds=1)).isoformat()
    assert await walk(updatedSince=later) == ["reg-0"]
    assert await walk(status="NO_SUCH_STATE") == []


async def test_a_registration_changed_during_a_feed_walk_comes_again_with_its_news(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    for number in range(4):
        await put_registration(sessionmaker, f"reg-{number}", at=T0 + timedelta(minutes=number))
    since = T0.isoformat()
    first = (await v1.get("/v1/registrations", params={"updatedSince": since, "limit": 2})).json()
    assert [item["id"] for item in first["items"]] == ["reg-0", "reg-1"]
    await put_registration(sessionmaker, "reg-0", "IN_PROGRESS", at=T0 + timedelta(hours=1))
    rest = (
        await v1.get(
            "/v1/registrations",
            params={"updatedSince": since, "limit": 50, "cursor": first["nextCursor"]},
        )
    ).json()
    assert [(item["id"], item["status"]) for item in rest["items"]] == [
        ("reg-2", "IN_QUEUE"),
        ("reg-3", "IN_QUEUE"),
        ("reg-0", "IN_PROGRESS"),
    ]


def forged(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": "0"}, 422),
        ({"limit": "501"}, 422),
        ({"limit": "-3"}, 422),
        ({"limit": "ten"}, 422),
        ({"updatedSince": "yesterday"}, 422),
        ({"updatedSince": "2026-01-01T10:00:00"}, 422),  # no offset
        ({"updatedSince": "0.5"}, 422),  # a number: pydantic would read seconds since 1970
        ({"updatedSince": "2026-01-01"}, 422),  # a date, not a date-time
        ({"status": "A\x00B"}, 422),
        ({"status": ""}, 422),
        ({"registrationType": "x" * 256}, 422),
        ({"cursor": "!!not base64!!"}, 422),
        ({"cursor": forged([1, 2])}, 422),
        ({"cursor": forged({"id": 5})}, 422),
        ({"cursor": forged({"id": "a\x00"})}, 422),
        ({"cursor": forged({"id": "a", "at": "2026-01-01T10:00:00+00:00"})}, 422),
        ({"cursor": forged({"id": "a"}), "updatedSince": "2026-01-01T10:00:00Z"}, 422),
        ({"cursor": "x" * 1025}, 422),
    ],
)
async def test_bad_list_parameters_are_problems(
    v1: httpx.AsyncClient, params: dict[str, str], status: int
) -> None:
    body = assert_problem(await v1.get("/v1/registrations", params=params), status)
    if status == 422:
        assert body["errors"], body
        assert all(set(error) == {"loc", "msg", "type"} for error in body["errors"])
    for value in params.values():
        if len(value) > 3:
            assert value not in json.dumps(body)  # input is never echoed


async def test_a_cursor_walk_stays_valid_across_requests(
    v1: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    for number in range(3):
        await put_registration(sessionmaker, f"reg-{number}")
    first = (await v1.get("/v1/registrations", params={"limit": 1})).json()
    cursor = first["nextCursor"]
    assert cursor and "=" not in cursor and "{" not in cursor  # opaque, URL-safe
    again = (await v1.get("/v1/registrations", params={"limit": 1, "cursor": cursor})).json()
    assert [item["id"] for item in again["items"]] == ["reg-1"]


async def test_history_oldest_first(v1: httpx.AsyncClient, sessionmaker: Sessions) -> None:
    await put_registration(sessionmaker, "reg-h", "IN_QUEUE", at=T0)
    await put_registration(sessionmaker, "reg-h", "IN_PROGRESS", at=T0 + timedelta(hours=1))
    await put_registration(sessionmaker, "reg-h", "APPROVED", at=T0 + timedelta(hours=2))
    await put_registration(sessionmaker, "reg-other", "REJECTED", at=T0)
    response = await v1.get("/v1/registrations/reg-h/history")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(i["fromStatus"], i["toStatus"]) for i in items] == [
        (None, "IN_QUEUE"),
        ("IN_QUEUE", "IN_PROGRESS"),
        ("IN_PROGRESS", "APPROVED"),
    ]
    assert [iso(i["at"]) for i in items] == [T0 + timedelta(hours=h) for h in range(3)]
    assert {i["source"] for i in items} == {"reconcile"}
    assert {i["eventId"] for i in items} == {None}
    assert {i["note"] for i in items} == {None}
    assert set(items[0]) == {
        "projectId",
        "fromStatus",
        "toStatus",
        "at",
        "source",
        "eventId",
        "note",
    }


async def test_history_of_unknown_is_404(v1: httpx.AsyncClient) -> None:
    assert_problem(await v1.get("/v1/registrations/nope/history"), 404)


async def test_refresh_fetches_from_sinch_and_applies(
    v1: httpx.AsyncClient, sim: SimulatorControl, sessionmaker: Sessions
) -> None:
    doc = await sim.create_registration(lifecycle=["IN_PROGRESS"])
    response = await v1.post(f"/v1/registrations/{doc['id']}/refresh")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "IN_PROGRESS"
    assert body["sinch"] == await sim.registration(doc["id"])
    assert (await sim.stats())["getRegistration"] == 1

    await sim.transition(doc["id"], "APPROVED")
    body = (await v1.post(f"/v1/registrations/{doc['id']}/refresh")).json()
    assert body["status"] == "APPROVED"
    assert (await v1.get(f"/v1/registrations/{doc['id']}")).json() == body
    history = (await v1.get(f"/v1/registrations/{doc['id']}/history")).json()["items"]
    assert [(i["fromStatus"], i["toStatus"], i["source"], i["eventId"]) for i in history] == [
        (None, "IN_PROGRESS", "refetch", None),
        ("IN_PROGRESS", "APPROVED", "refetch", None),
    ]


async def test_refresh_of_a_registration_sinch_does_not_know_is_404(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    body = assert_problem(await v1.post("/v1/registrations/unknown-at-sinch/refresh"), 404)
    assert "Sinch" in body["detail"]


async def test_refresh_while_sinch_is_unavailable_is_503_with_retry_after(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    doc = await sim.create_registration()
    await sim.inject_fault("status", status=503, retry_after=0, count=20)
    response = await v1.post(f"/v1/registrations/{doc['id']}/refresh")
    body = assert_problem(response, 503)
    assert response.headers["retry-after"] == "1"
    assert "sim-key-secret" not in response.text
    assert "http" not in body["detail"]  # no Sinch URL either
    await sim.clear_faults()
    assert (await v1.post(f"/v1/registrations/{doc['id']}/refresh")).status_code == 200


async def test_refresh_without_sinch_credentials_is_503(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url)
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=AUTH) as client,
    ):
        body = assert_problem(await client.post("/v1/registrations/any/refresh"), 503)
        assert body["detail"] == "Sinch credentials not configured."


async def wait_for_sinch_get(sim: SimulatorControl) -> None:
    """Until the simulator has received a GET of a registration (bounded, polling)."""
    async with asyncio.timeout(10):
        while (await sim.stats())["getRegistration"] < 1:
            await asyncio.sleep(0.01)


async def test_refresh_holds_no_transaction_during_the_sinch_call(
    v1: httpx.AsyncClient, sim: SimulatorControl, sessionmaker: Sessions
) -> None:
    """The race of a refresh with a write that lands while the refresh waits for Sinch: the write
    goes through at once (no transaction, no lock is held across the GET), and the refresh, whose
    fetch began before that write's, keeps it (between two fetches the later one wins)."""
    doc = await sim.create_registration(lifecycle=["IN_PROGRESS"])  # what the refresh will get
    await put_registration(sessionmaker, doc["id"], "IN_QUEUE", at=T0)
    # Long enough for the write below to commit while the GET is held (it takes milliseconds).
    await sim.inject_fault("hang", delay_seconds=2, count=1)
    refresh = asyncio.create_task(v1.post(f"/v1/registrations/{doc['id']}/refresh"))
    await wait_for_sinch_get(sim)  # the refresh is inside its Sinch call now

    # Another process applies a document it fetched later than the refresh began its GET.
    later = SinchRegistration.from_document(
        sinch_document(doc["id"], "APPROVED", at=T0 + timedelta(seconds=1))
    )
    async with sessionmaker.begin() as session:
        open_transactions = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
            )
        )
        assert open_transactions == 0, "a transaction is open across the Sinch call"
        # A lock held by the refresh is an error here, not a wait.
        await session.execute(
            select(Registration.id).where(Registration.id == doc["id"]).with_for_update(nowait=True)
        )
        await apply_snapshot(
            session,
            later,
            project_id=await settings_project(session),
            source=HistorySource.RECONCILE,
            event_id=None,
            fetched_at=utcnow(),
            now=utcnow(),
        )
    assert not refresh.done(), "the write committed only after the refresh had finished"

    response = await refresh
    assert response.status_code == 200, response.text
    # The refresh's older fetch lost to the later one, and it answers what is kept.
    assert response.json()["status"] == "APPROVED"
    assert response.json()["sinch"]["updateTime"] == "2026-01-01T10:00:01"
    history = (await v1.get(f"/v1/registrations/{doc['id']}/history")).json()["items"]
    assert [(i["fromStatus"], i["toStatus"], i["source"]) for i in history] == [
        (None, "IN_QUEUE", "reconcile"),
        ("IN_QUEUE", "APPROVED", "reconcile"),
    ]

    # A refresh begun after that write applies Sinch's document.
    assert (await v1.post(f"/v1/registrations/{doc['id']}/refresh")).json()["status"] == (
        "IN_PROGRESS"
    )


@pytest.mark.parametrize(
    ("params", "at"),
    [
        pytest.param({}, lambda n: T0, id="by-id"),
        pytest.param(
            {"updatedSince": "2026-01-01T00:00:00+00:00"},
            lambda n: T0 + timedelta(minutes=n),
            id="by-change",
        ),
    ],
)
async def test_the_next_page_follows_the_cursor_not_an_offset(
    v1: httpx.AsyncClient,
    sessionmaker: Sessions,
    params: dict[str, str],
    at: Callable[[int], datetime],
) -> None:
    for number in range(1, 6):
        await put_registration(sessionmaker, f"reg-{number}", at=at(number))
    first = (await v1.get("/v1/registrations", params={**params, "limit": "2"})).json()
    assert [item["id"] for item in first["items"]] == ["reg-1", "reg-2"]

    # A row that sorts before the cursor: an offset of 2 would now answer reg-2 a second time.
    await put_registration(sessionmaker, "reg-0", at=at(0))
    query = {**params, "limit": "2", "cursor": first["nextCursor"]}
    second = (await v1.get("/v1/registrations", params=query)).json()

    assert [item["id"] for item in second["items"]] == ["reg-3", "reg-4"]


@pytest.mark.parametrize("bad", ["a%00b", "tab%09in", "x" * 256])
@pytest.mark.parametrize("suffix", ["", "/history", "/refresh"])
async def test_bad_registration_ids_are_422(v1: httpx.AsyncClient, bad: str, suffix: str) -> None:
    # PostgreSQL refuses NUL in text: without this check the database error would be a 500.
    method = "POST" if suffix == "/refresh" else "GET"
    assert_problem(await v1.request(method, f"/v1/registrations/{bad}{suffix}"), 422)
