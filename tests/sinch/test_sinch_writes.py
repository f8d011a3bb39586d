"""The client's writes against the simulator over HTTP: Sinch's error object reaches the caller,
and only the safe writes are retried (a POST never: Sinch documents no idempotency key)."""

from __future__ import annotations

from typing import Any

import pytest

from app.sinch.errors import (
    SinchNotFoundError,
    SinchRejectedError,
    SinchRetryableError,
    SinchTimeoutError,
)
from devtools.simulator import SimulatorControl
from tests.sinch.sinch_support import ClientFactory

BODY: dict[str, Any] = {
    "registrationType": "ALPHANUMERIC_SENDER_ID",
    "policyId": "sim-policy-gb-alphanumeric",
    "requestDetails": [{"senderIdDetails": [{"senderId": "ACME"}]}],
}


async def test_create_answers_the_registration(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    created = await make_client().create_registration({**BODY, "callbackUrl": "https://x.test/cb"})

    assert (created.status, created.callback_url) == ("IN_QUEUE", "https://x.test/cb")
    assert created.raw == await sim.registration(created.id)


async def test_a_refusal_carries_sinchs_error(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    with pytest.raises(SinchRejectedError) as refused:
        await make_client().create_registration({"registrationType": "ALPHANUMERIC_SENDER_ID"})

    assert refused.value.status_code == 400
    assert refused.value.error is not None
    assert refused.value.error["status"] == "INVALID_ARGUMENT"
    fields = [v["field"] for v in refused.value.error["details"][0]["fieldViolations"]]
    assert fields == ["policyId", "requestDetails"]


async def test_a_create_is_tried_once(sim: SimulatorControl, make_client: ClientFactory) -> None:
    await sim.inject_fault("status", status=503, count=1)

    with pytest.raises(SinchRetryableError) as failed:
        await make_client(max_attempts=4).create_registration(BODY)

    assert failed.value.status_code == 503
    assert (await sim.stats())["createRegistration"] == 1
    assert await sim.registrations() == []


async def test_a_create_without_an_answer_in_time_is_a_timeout(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    await sim.inject_fault("hang", delay_seconds=3.0, count=1)

    with pytest.raises(SinchTimeoutError):
        await make_client(deadline_seconds=0.5).create_registration(BODY)


async def test_update_and_delete_are_retried(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    client = make_client(max_attempts=4)
    created = await client.create_registration(BODY)
    await sim.inject_fault("status", status=503, count=1)

    updated = await client.update_registration(created.id, {**BODY, "tags": ["#b"]})

    assert updated.raw["tags"] == ["#b"]
    await sim.inject_fault("status", status=502, count=1)
    await client.delete_registration(created.id)
    stats = await sim.stats()
    assert (stats["updateRegistration"], stats["deleteRegistration"]) == (2, 2)
    with pytest.raises(SinchNotFoundError):
        await client.delete_registration(created.id)
