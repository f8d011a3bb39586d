"""Callback delivery: signed like Sinch, in order, shuffled, reversed, duplicated, omitted, late."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.simulator import SimulatorControl, SimulatorServer, sign
from devtools.simulator.delivery import plan_delivery
from tests.simulator.sim_receiver import Receiver


def _received_events(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.received]


async def _lifecycles(sim: SimulatorControl, count: int) -> list[dict[str, Any]]:
    for _ in range(count):
        await sim.create_registration(lifecycle=["IN_PROGRESS", "APPROVED"])
    return await sim.all_events()


def test_sign_is_hmac_sha1_lowercase_hex() -> None:
    assert sign(b"", "") == "fbdb1d1b18aa6c08324b7d64b71fb76370690e1d"
    assert sign(b"The quick brown fox jumps over the lazy dog", "key") == (
        "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
    )


async def test_deliveries_are_signed_with_the_project_secret(
    sim_server: SimulatorServer, sim: SimulatorControl, receiver: Receiver
) -> None:
    events = await _lifecycles(sim, 2)

    results = await sim.deliver(receiver.url)

    assert [r["status"] for r in results] == [200] * 6
    assert [r["eventId"] for r in results] == [e["eventId"] for e in events]
    secret = sim_server.hmac_secret.encode("utf-8")
    for got in receiver.received:
        expected = hmac.new(secret, got.body, hashlib.sha1).hexdigest()
        assert got.signature == expected
    assert _received_events(receiver) == events


async def test_a_new_secret_signs_later_deliveries(
    sim_server: SimulatorServer, sim: SimulatorControl, receiver: Receiver
) -> None:
    async with SimulatorControl(sim_server.base_url) as control:
        http = control._http
        token = (
            await http.post(
                sim_server.auth_url,
                data={"grant_type": "client_credentials"},
                auth=(sim_server.key_id, sim_server.key_secret),
            )
        ).json()["access_token"]
        answer = await http.put(
            f"{sim_server.base_url}/v1/projects/{sim_server.project_id}/callback-configuration",
            json={"hmacSecret": "rotated-secret"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200
    await sim.create_registration()

    await sim.deliver(receiver.url)

    (got,) = receiver.received
    assert got.signature == hmac.new(b"rotated-secret", got.body, hashlib.sha1).hexdigest()


async def test_events_describe_each_state_change(sim: SimulatorControl) -> None:
    created = await sim.create_registration(status="IN_QUEUE")
    event = await sim.transition(created["id"], "NOT_A_KNOWN_STATE", comment="why not")

    events = await sim.events(created["id"])

    assert [e["status"] for e in events] == ["IN_QUEUE", "NOT_A_KNOWN_STATE"]
    assert events[1] == event
    assert event["eventType"] == "REGISTRATION_STATUS_UPDATE"
    assert event["resourceType"] == "REGISTRATION"
    assert event["resourceId"] == created["id"]
    assert event["comments"] == "why not"
    truth = await sim.registration(created["id"])
    assert event["createTime"] == truth["updateTime"]
    assert truth["logs"][-1]["message"] == "why not"


@pytest.mark.parametrize("order", ["in_order", "reversed", "shuffled"])
async def test_delivery_order(sim: SimulatorControl, receiver: Receiver, order: str) -> None:
    events = await _lifecycles(sim, 5)
    ids = [e["eventId"] for e in events]

    await sim.deliver(receiver.url, order=order, seed=3)  # type: ignore[arg-type]

    got = [e["eventId"] for e in _received_events(receiver)]
    assert sorted(got) == sorted(ids)
    if order == "in_order":
        assert got == ids
    elif order == "reversed":
        assert got == ids[::-1]
    else:
        assert got != ids


async def test_duplicates_and_omissions(sim: SimulatorControl, receiver: Receiver) -> None:
    events = await _lifecycles(sim, 4)
    ids = [e["eventId"] for e in events]
    omitted = ids[1:3]

    results = await sim.deliver(receiver.url, duplicates=5, omit=omitted, seed=9)

    got = [e["eventId"] for e in _received_events(receiver)]
    assert len(results) == len(got) == len(ids) - 2 + 5
    assert set(got) == set(ids) - set(omitted)
    first_seen = list(dict.fromkeys(got))
    assert first_seen == [i for i in ids if i not in omitted]


async def test_chosen_events_only(sim: SimulatorControl, receiver: Receiver) -> None:
    events = await _lifecycles(sim, 2)
    chosen = [events[3]["eventId"], events[0]["eventId"]]

    await sim.deliver(receiver.url, event_ids=chosen)

    assert [e["eventId"] for e in _received_events(receiver)] == chosen


async def test_late_delivery_in_the_background(sim: SimulatorControl, receiver: Receiver) -> None:
    await _lifecycles(sim, 1)

    planned = await sim.deliver(receiver.url, delay_seconds=0.3, wait=False)

    assert [p["status"] for p in planned] == [None] * 3
    assert receiver.received == []
    for _ in range(100):
        if len(receiver.received) == 3:
            break
        await asyncio.sleep(0.02)
    assert len(receiver.received) == 3


async def test_concurrent_delivery(sim: SimulatorControl, receiver: Receiver) -> None:
    events = await _lifecycles(sim, 10)

    results = await sim.deliver(receiver.url, concurrency=8, order="shuffled")

    assert sorted(r["eventId"] for r in results) == sorted(e["eventId"] for e in events)
    assert all(r["status"] == 200 for r in results)
    assert len(receiver.received) == 30


async def test_receiver_answers_are_reported(sim: SimulatorControl, receiver: Receiver) -> None:
    events = await _lifecycles(sim, 1)
    receiver.status_for[events[1]["eventId"]] = 500

    results = await sim.deliver(receiver.url)

    assert [r["status"] for r in results] == [200, 500, 200]


async def test_unreachable_receiver_is_reported(sim: SimulatorControl) -> None:
    await sim.create_registration()

    (result,) = await sim.deliver("http://127.0.0.1:9/nobody-listens")

    assert result["status"] is None
    assert result["error"] == "ConnectError"


async def test_default_url_is_each_registrations_callback_url(
    sim: SimulatorControl, receiver: Receiver
) -> None:
    await sim.create_registration(callback_url=receiver.url)

    (result,) = await sim.deliver()

    assert result["status"] == 200
    assert result["url"] == receiver.url


@given(
    count=st.integers(0, 30),
    duplicates=st.integers(0, 10),
    order=st.sampled_from(["in_order", "shuffled", "reversed"]),
    seed=st.integers(),
    omit_every=st.integers(2, 5),
)
def test_plan_delivery_properties(
    count: int, duplicates: int, order: str, seed: int, omit_every: int
) -> None:
    events = [{"eventId": f"e{i}"} for i in range(count)]
    omit = [e["eventId"] for e in events[::omit_every]]
    kept = [e["eventId"] for e in events if e["eventId"] not in omit]

    plan = plan_delivery(
        events,
        order=order,  # type: ignore[arg-type]
        duplicates=duplicates,
        omit=omit,
        rng=random.Random(seed),
    )

    got = [e["eventId"] for e in plan]
    assert set(got) == set(kept)
    assert len(got) == (len(kept) + duplicates if kept else 0)
    first_seen = list(dict.fromkeys(got))
    if order == "in_order":
        assert first_seen == kept
    elif order == "reversed":
        assert first_seen == kept[::-1]
