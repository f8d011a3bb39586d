"""Arbitrary bodies, headers and signatures against the real API and worker processes.

No answer is a 5xx, nothing is kept without a valid signature, and every signed body, whatever its
shape, is kept and ends `processed` or `invalid`, never stuck in `received`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.core.db import create_engine
from app.core.models import CallbackEvent, EventState
from app.events.parsing import dedup_key, parse_callback
from tests.support.signing import sign
from tests.support.stack import CALLBACK_PATH, HMAC_SECRET, Stack, running_stack

MAX_BODY = 4096


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("bad-input")
    with running_stack(
        folder, f"bad_input_{worker_id}", CALLBACK_MAX_BODY_BYTES=str(MAX_BODY)
    ) as running:
        running.start_api_and_worker()
        yield running


async def _count_and_state(stack: Stack, key: str) -> tuple[int, str | None]:
    engine = create_engine(stack.settings)
    try:
        async with engine.connect() as connection:
            total = await connection.scalar(select(func.count()).select_from(CallbackEvent))
            state = await connection.scalar(
                select(CallbackEvent.state).where(CallbackEvent.dedup_key == key)
            )
            return int(total or 0), state
    finally:
        await engine.dispose()


text = st.text(max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
sinch_like = st.fixed_dictionaries(
    {},
    optional={
        "eventId": text | st.integers(),
        "resourceId": text | st.integers() | st.none(),
        "registrationId": text,
        "id": json_values,
        "status": text | st.sampled_from(["APPROVED", "IN_PROGRESS", "WHATEVER"]),
        "createTime": text | st.sampled_from(["2026-01-01T10:00:00", "2026-13-45T99:00:00"]),
        "timestamp": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=MAX_BODY + 512),
    json_values.map(lambda value: json.dumps(value).encode()),
    sinch_like.map(lambda value: json.dumps(value).encode()),
)
header_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z").filter(
    lambda name: (
        name.lower()
        not in {
            "content-length",
            "host",
            "transfer-encoding",
            "x-sinch-signature",
            "connection",
            "expect",
            "upgrade",
            "te",
            "trailer",
            "keep-alive",
            "proxy-connection",
        }
    )
)
# What an HTTP client can put on the wire: visible ASCII, inner spaces.
header_values = st.from_regex(r"\A([!-~]([ -~]{0,38}[!-~])?)?\Z")
headers = st.dictionaries(header_names, header_values, max_size=4)
signatures = st.one_of(st.none(), st.just("valid"), header_values, st.just("0" * 40))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, extra_headers=headers, signature=signatures)
def test_arbitrary_input_never_5xx_and_only_signed_bodies_are_kept(
    stack: Stack, body: bytes, extra_headers: dict[str, str], signature: str | None
) -> None:
    request_headers: dict[str, Any] = dict(extra_headers)
    signed = signature == "valid"
    if signed:
        request_headers["X-Sinch-Signature"] = sign(body, HMAC_SECRET)
    elif signature is not None:
        request_headers["X-Sinch-Signature"] = signature
    key = dedup_key(parse_callback(body), body)
    before, known_state = asyncio.run(_count_and_state(stack, key))

    response = httpx.post(
        stack.api_url + CALLBACK_PATH, content=body, headers=request_headers, timeout=30
    )
    assert response.status_code < 500

    after, state = asyncio.run(_count_and_state(stack, key))
    if len(body) > MAX_BODY:
        assert response.status_code == 413
        assert after == before
    elif not signed:
        valid_by_chance = signature is not None and signature.strip().lower() == sign(
            body, HMAC_SECRET
        )
        # 401, or 400 when the HTTP layer itself refuses a malformed request.
        assert response.status_code in (400, 401) or valid_by_chance
        if response.status_code == 401:
            assert response.headers["content-type"] == "application/problem+json"
        assert after == before, "something was kept without a valid signature"
    else:
        assert response.status_code == 200
        assert state is not None, "a signed body was not kept"
        assert after == before + (known_state is None)
        deadline = time.monotonic() + 30
        while state == EventState.RECEIVED:
            assert time.monotonic() < deadline, "a signed body stayed `received`"
            time.sleep(0.05)
            _, state = asyncio.run(_count_and_state(stack, key))
        assert state in (EventState.PROCESSED, EventState.INVALID)


def test_the_processes_logged_and_the_logs_hold_no_secret(stack: Stack) -> None:
    # The fixture's teardown greps every log for the secrets; that grep needs logs to read.
    # xdist may run this test alone on a fresh stack, so it sends the callback it looks for.
    body = json.dumps(
        {"eventId": "log-probe", "resourceId": "log-probe-reg", "status": "IN_PROGRESS"}
    ).encode()
    response = httpx.post(
        stack.api_url + CALLBACK_PATH,
        content=body,
        headers={"X-Sinch-Signature": sign(body, HMAC_SECRET)},
        timeout=30,
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 30
    while "callback accepted" not in stack.logs():
        assert time.monotonic() < deadline, "the API never logged the accepted callback"
        time.sleep(0.05)
