"""No single input breaks convergence: arbitrary signed callbacks through the real processes.

Hypothesis writes signed bodies of every shape (any JSON, any bytes, ids with NUL or lone
surrogates, times ten years ahead or out of range once converted to UTC, known and unknown
registrations) and posts them, mixed with the real lifecycle callbacks of a few registrations, to
the real API process; a real worker process applies them, with the simulator as Sinch. Then:

- no answer is a 5xx, and every body (signed, under the size cap) is answered 200 and kept;
- every kept event ends `processed` or `invalid`, never stuck and never `failed`;
- after a refresh through the API, every registration equals the simulator's truth, and no
  registration exists locally that Sinch does not have.

The oracle is independent of the service's code: the signature is a plain HMAC, and "kept" means
the raw bytes are in the inbox, or another kept body carries the same `eventId`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.core.db import create_engine
from app.core.models import CallbackEvent
from devtools.simulator import SimulatorControl
from tests.support.reads import registrations
from tests.support.stack import API_TOKEN, CALLBACK_PATH, HMAC_SECRET, Stack, running_stack

REGISTRATIONS = 3
LIFECYCLE = ["IN_PROGRESS", "PENDING", "IN_PROGRESS", "APPROVED"]
EXAMPLES = 60
MAX_BODY = 16_384
STATES = [
    "DRAFT",
    "IN_QUEUE",
    "IN_PROGRESS",
    "APPROVED",
    "REJECTED",
    "PENDING",
    "ON_HOLD",
    "PENDING_APPROVAL",
    "PENDING_ATTACHMENTS",
]


def signature(body: bytes) -> str:
    return hmac.new(HMAC_SECRET.encode(), body, hashlib.sha1).hexdigest()


# --- what Hypothesis writes -----------------------------------------------------------------

odd_text = st.text(
    st.characters(codec=None, exclude_categories=()),  # NUL, lone surrogates, anything
    max_size=40,
)
odd_ids = st.one_of(
    odd_text,
    st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", ".", "..", "/", "%00", "?", " ", "é"]),
    st.text(min_size=256, max_size=300),
    st.integers(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
now = datetime.now(UTC)
times = st.one_of(
    st.datetimes(timezones=st.timezones() | st.just(UTC)).map(lambda t: t.isoformat()),
    st.datetimes().map(lambda t: t.isoformat()),
    st.sampled_from(
        [
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            (now + timedelta(days=3653)).replace(tzinfo=None).isoformat(timespec="seconds"),
            (now - timedelta(days=1)).replace(tzinfo=None).isoformat(timespec="seconds"),
            (now + timedelta(seconds=30)).replace(tzinfo=None).isoformat(timespec="seconds"),
            "2026-13-45T99:00:00",
            "",
            "Z",
        ]
    ),
    st.integers(),
    odd_text,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | odd_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=10,
)


def sinch_like(known_ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    ids = st.sampled_from(known_ids) | odd_ids
    return st.fixed_dictionaries(
        {},
        optional={
            "eventId": odd_ids | st.uuids().map(str),
            "resourceId": ids,
            "registrationId": ids,
            "id": ids,
            "status": st.sampled_from([*STATES, "SUSPENDED"]) | odd_text,
            "registrationState": st.sampled_from(STATES) | odd_text,
            "createTime": times,
            "timestamp": times,
            "eventTime": times,
            "updateTime": times,
            "comments": odd_text,
            "extra": json_values,
        },
    )


def encode(document: Any) -> bytes:
    # ensure_ascii keeps NUL and lone surrogates as \u escapes: valid JSON text, odd strings.
    return json.dumps(document).encode()


def bodies(known_ids: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        sinch_like(known_ids).map(encode),
        sinch_like(known_ids).map(encode),
        json_values.map(encode),
        st.binary(max_size=256),
    )


# --- the stack and the oracle ---------------------------------------------------------------


@pytest.fixture
def stack(tmp_path: Path, worker_id: str) -> Iterator[Stack]:
    with running_stack(
        tmp_path,
        f"arbitrary_{worker_id}",
        CALLBACK_MAX_BODY_BYTES=str(MAX_BODY),
    ) as running:
        running.start_api_and_worker()
        yield running


async def kept(stack: Stack) -> list[tuple[bytes, str]]:
    engine = create_engine(stack.settings)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(CallbackEvent.body, CallbackEvent.state))
            return [(bytes(body), state) for body, state in rows]
    finally:
        await engine.dispose()


def event_id(body: bytes) -> str | None:
    """The body's `eventId` as Sinch means it: a string, or a whole number written as one."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    value = document.get("eventId") if isinstance(document, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else None


def wait_until_settled(stack: Stack, *, limit_seconds: float = 120) -> list[tuple[bytes, str]]:
    deadline = time.monotonic() + limit_seconds
    while True:
        rows = asyncio.run(kept(stack))
        if all(state != "received" for _, state in rows):
            return rows
        assert time.monotonic() < deadline, "events stayed `received`"
        time.sleep(0.2)


async def lifecycles(stack: Stack) -> tuple[list[str], list[bytes]]:
    """Registrations at the simulator, and their real callbacks as Sinch would send them."""
    async with SimulatorControl(stack.sim.base_url) as sim:
        ids = [
            (await sim.create_registration(lifecycle=LIFECYCLE))["id"] for _ in range(REGISTRATIONS)
        ]
        events = [event for rid in ids for event in await sim.events(rid)]
    return ids, [json.dumps(event, separators=(",", ":")).encode() for event in events]


async def refresh_and_compare(stack: Stack, known_ids: list[str]) -> None:
    async with (
        SimulatorControl(stack.sim.base_url) as sim,
        httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
        ) as api,
    ):
        truth = {doc["id"]: doc["status"] for doc in await sim.registrations()}
        for registration_id in known_ids:
            response = await api.post(f"/v1/registrations/{registration_id}/refresh")
            assert response.status_code == 200, response.text
    local = {r.id: r.status for r in await registrations(stack.settings)}
    assert set(local) <= set(truth), "a registration Sinch does not have was made up"
    assert {rid: local.get(rid) for rid in known_ids} == {rid: truth[rid] for rid in known_ids}


def test_arbitrary_signed_callbacks_never_break_convergence(stack: Stack) -> None:
    known_ids, real_callbacks = asyncio.run(lifecycles(stack))
    url = stack.api_url + CALLBACK_PATH
    answered: list[bytes] = []
    shuffled = random.Random(7).sample(real_callbacks, len(real_callbacks))

    with httpx.Client(timeout=30) as client:

        def post(body: bytes) -> None:
            response = client.post(
                url, content=body, headers={"X-Sinch-Signature": signature(body)}
            )
            assert response.status_code == 200, (response.status_code, body[:200])
            answered.append(body)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(body=bodies(known_ids))
        def post_arbitrary(body: bytes) -> None:
            post(body)
            if shuffled:  # the real life of the registrations goes on in between
                post(shuffled.pop())

        # The cases found from outside, every time (Hypothesis may or may not draw them).
        ten_years = (datetime.now(UTC) + timedelta(days=3653)).replace(tzinfo=None)
        for document in [
            {"eventId": "nul\x00id", "resourceId": known_ids[0], "status": "IN_PROGRESS"},
            {"eventId": "lone-surrogate", "resourceId": "x\ud800", "status": "APPROVED"},
            {"resourceId": known_ids[1], "status": "PENDING", "createTime": "a\x00"},
            {
                "eventId": "from-the-future",
                "resourceId": known_ids[2],
                "status": "IN_PROGRESS",
                "createTime": ten_years.isoformat(timespec="seconds"),
            },
            {
                "eventId": "out-of-range",
                "resourceId": known_ids[0],
                "status": "APPROVED",
                "createTime": "9999-12-31T23:59:59-14:00",
            },
        ]:
            post(encode(document))
        post_arbitrary()
        for body in shuffled:
            post(body)

    rows = wait_until_settled(stack)
    kept_bodies = {body for body, _ in rows}
    kept_event_ids = {event_id(body) for body, _ in rows} - {None}
    for body in answered:
        assert body in kept_bodies or event_id(body) in kept_event_ids, (
            f"answered 200 but not kept: {body[:200]!r}"
        )
    assert {state for _, state in rows} <= {"processed", "invalid"}
    asyncio.run(refresh_and_compare(stack, known_ids))
