"""docs/api.md's callback table, row by row, over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from app.core.jobs import events_job_id
from app.core.settings import Settings
from app.main import create_app
from tests.callbacks.conftest import CALLBACK_PATH, event_body, post_signed
from tests.conftest import API_TOKEN, OLD_CALLBACK_SECRET, make_settings
from tests.support.reads import events
from tests.support.servers import serve
from tests.support.signing import sign

PROBLEM = "application/problem+json"


async def queued_job_ids(settings: Settings) -> set[str]:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        return {member.decode() for member in await client.zrange("arq:queue", 0, -1)}
    finally:
        await client.aclose()


async def wait_for_jobs(settings: Settings, expected: set[str]) -> set[str]:
    async with asyncio.timeout(10):
        while not expected <= (found := await queued_job_ids(settings)):
            await asyncio.sleep(0.02)
    return found


async def metric(client: httpx.AsyncClient, line_prefix: str) -> float:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.split()[-1])
    return 0.0


async def test_new_event_is_kept_with_everything_then_enqueued(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    body = event_body(event_id="evt-1", registration_id="reg-1")
    response = await api.post(
        CALLBACK_PATH,
        content=body,
        headers={
            "X-Sinch-Signature": sign(body, "current-callback-secret-0123456789"),
            "Authorization": "Bearer someone-elses-credential",
            "X-Request-Id": "trace-1",
        },
    )
    assert response.status_code == 200

    [event] = await events(settings)
    assert event.body == body  # the raw bytes, not a re-encoding
    assert event.event_id == "evt-1"
    assert event.dedup_key == "evt-1"
    assert event.registration_id == "reg-1"
    assert event.state == "received"
    assert event.secret_index == 0
    assert event.peer == "127.0.0.1"
    assert event.received_at.tzinfo is not None
    assert event.headers["x-sinch-signature"] == sign(body, "current-callback-secret-0123456789")
    assert event.headers["x-request-id"] == "trace-1"
    assert "authorization" not in event.headers

    await wait_for_jobs(settings, {events_job_id([event.id])})
    assert await metric(api, 'sinch_callbacks_total{result="accepted"}') == 1
    assert await metric(api, 'sinch_callback_secret_matches_total{secret="0"}') == 1


async def test_previous_secret_is_accepted_and_recorded(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    response = await post_signed(api, event_body(event_id="evt-old"), secret=OLD_CALLBACK_SECRET)
    assert response.status_code == 200
    [event] = await events(settings)
    assert event.secret_index == 1
    assert await metric(api, 'sinch_callback_secret_matches_total{secret="1"}') == 1


async def test_duplicate_event_id_answers_200_and_is_counted(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    first = event_body(event_id="evt-dup", at="2026-01-01T10:00:00")
    again = event_body(event_id="evt-dup", at="2026-01-01T10:00:00")  # another resourceId
    assert (await post_signed(api, first)).status_code == 200
    assert (await post_signed(api, again)).status_code == 200
    assert (await post_signed(api, first)).status_code == 200
    [event] = await events(settings)
    assert event.body == first
    assert event.duplicate_count == 2
    assert await metric(api, 'sinch_callbacks_total{result="duplicate"}') == 2


async def test_without_event_id_the_same_body_is_a_duplicate(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    body = event_body(registration_id="reg-x")
    other = event_body(registration_id="reg-x", status="APPROVED")
    for payload in (body, body, other):
        assert (await post_signed(api, payload)).status_code == 200
    kept = list(await events(settings))
    assert [event.body for event in kept] == [body, other]
    assert [event.duplicate_count for event in kept] == [1, 0]
    assert all(event.event_id is None for event in kept)
    assert all(event.dedup_key.startswith("sha256:") for event in kept)


@pytest.mark.parametrize("body", [b"not json at all", b"[1,2,3]", b'{"status": "APPROVED"}'])
async def test_unusable_signed_body_is_still_kept(
    api: httpx.AsyncClient, settings: Settings, body: bytes
) -> None:
    assert (await post_signed(api, body)).status_code == 200
    [event] = await events(settings)
    assert event.body == body
    assert event.state == "received"
    assert event.registration_id is None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Sinch-Signature": ""},
        {"X-Sinch-Signature": "0" * 40},
        {"X-Sinch-Signature": sign(b"other body", "current-callback-secret-0123456789")},
        {"X-Sinch-Signature": sign(event_body(event_id="fixed"), "not-our-secret")},
    ],
    ids=["missing", "empty", "zeros", "other-body", "other-secret"],
)
async def test_missing_or_wrong_signature_is_401_and_nothing_is_kept(
    api: httpx.AsyncClient, settings: Settings, headers: dict[str, str]
) -> None:
    response = await api.post(CALLBACK_PATH, content=event_body(event_id="fixed"), headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 401
    assert problem["detail"] == "The callback's signature could not be verified."
    assert await events(settings) == []
    assert await metric(api, 'sinch_callbacks_total{result="bad_signature"}') == 1


async def test_size_cap_counts_bytes_read(database_url: str, redis_url: str) -> None:
    cap = 2048
    settings = make_settings(database_url, redis_url, callback_max_body_bytes=cap)
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url) as client,
    ):
        exact = b'{"resourceId": "r", "pad": "' + b"x" * (cap - 30) + b'"}'
        assert len(exact) == cap
        assert (await post_signed(client, exact)).status_code == 200

        over = exact[:-2] + b'x"}'
        response = await post_signed(client, over)
        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
            for _ in range(cap // 256 + 2):
                yield b"y" * 256

        chunked = await client.post(
            CALLBACK_PATH, content=chunks(), headers={"X-Sinch-Signature": "00"}
        )
        assert chunked.status_code == 413
        assert await metric(client, 'sinch_callbacks_total{result="too_large"}') == 2
    kept = await events(settings)
    assert [event.body for event in kept] == [exact]


async def test_no_secret_configured_is_503(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url, sinch_callback_secrets=[])
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url) as client,
    ):
        body = event_body()
        response = await post_signed(client, body)
        assert response.status_code == 503
        assert response.headers["content-type"] == PROBLEM
        assert await metric(client, 'sinch_callbacks_total{result="unavailable"}') == 1
    assert await events(settings) == []


async def test_concurrent_duplicates_leave_one_row_per_event(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    bodies = [event_body(event_id=f"evt-{n}-{uuid.uuid4()}") for n in range(50)]
    posts = [post_signed(api, body) for body in bodies for _ in range(4)]
    responses = await asyncio.gather(*posts)
    assert [r.status_code for r in responses] == [200] * 200
    kept = list(await events(settings))
    assert len(kept) == 50
    assert sorted(event.body for event in kept) == sorted(bodies)
    assert sum(event.duplicate_count for event in kept) == 150


async def test_error_answers_never_echo_secrets(api: httpx.AsyncClient) -> None:
    body = event_body()
    response = await api.post(
        CALLBACK_PATH, content=body, headers={"X-Sinch-Signature": sign(body, "guess")}
    )
    text = response.text
    for secret in ("current-callback-secret-0123456789", OLD_CALLBACK_SECRET, API_TOKEN):
        assert secret not in text


async def test_other_methods_are_405_and_the_route_is_described(api: httpx.AsyncClient) -> None:
    # POSTs are answered in front of FastAPI (app.main.ServiceAPI); every other method still
    # reaches its router, and the OpenAPI document still describes the endpoint.
    response = await api.get(CALLBACK_PATH)
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["allow"] == "POST"
    operation = (await api.get("/openapi.json")).json()["paths"][CALLBACK_PATH]["post"]
    assert {"200", "401", "413", "503"} <= set(operation["responses"])
    assert operation["parameters"][0]["name"] == "X-Sinch-Signature"
