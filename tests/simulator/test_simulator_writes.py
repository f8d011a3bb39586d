"""The simulator's create, update and delete, over HTTP as Sinch's: Sinch's error body for a bad
request, and a created registration living the simulator's usual life (callbacks to its
`callbackUrl`)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from devtools.simulator import SimulatorControl
from tests.simulator.sim_receiver import Receiver


def create_body(**extra: Any) -> dict[str, Any]:
    return {
        "registrationType": "ALPHANUMERIC_SENDER_ID",
        "policyId": "sim-policy-gb-alphanumeric",
        "requestDetails": [{"senderIdDetails": [{"senderId": "ACME", "useCase": "OTP"}]}],
        **extra,
    }


async def test_a_created_registration_sends_its_callbacks_to_its_callback_url(
    api: httpx.AsyncClient, sim: SimulatorControl, receiver: Receiver
) -> None:
    answer = await api.post(
        "/registrations",
        json=create_body(callbackUrl=receiver.url, tags=["#a"], notificationContacts=[{"e": 1}]),
    )

    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["status"] == "IN_QUEUE"
    assert document["callbackUrl"] == receiver.url
    assert document["tags"] == ["#a"]
    assert document["notificationContacts"] == [{"e": 1}]
    assert document["requestDetails"] == create_body()["requestDetails"]
    assert (await api.get(f"/registrations/{document['id']}")).json() == document

    await sim.transition(document["id"], "IN_PROGRESS")
    await sim.deliver()  # no url: each event goes to its registration's callbackUrl

    received = [json.loads(r.body) for r in receiver.received]
    assert [(e["resourceId"], e["status"]) for e in received] == [
        (document["id"], "IN_QUEUE"),
        (document["id"], "IN_PROGRESS"),
    ]
    assert all(r.signature for r in receiver.received)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["registrationType", "policyId", "requestDetails"]),
        (create_body(registrationType="FAX"), ["registrationType", "policyId"]),
        (create_body(marketCode="ZZ"), ["marketCode", "policyId"]),
        (create_body(policyId="nope"), ["policyId"]),
        (create_body(tags="#a"), ["tags"]),
    ],
)
async def test_a_bad_create_answers_sinchs_error_body(
    api: httpx.AsyncClient, sim: SimulatorControl, body: dict[str, Any], fields: list[str]
) -> None:
    answer = await api.post("/registrations", json=body)

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["message"]
    [detail] = error["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in detail["fieldViolations"]] == fields
    assert await sim.registrations() == []


async def test_update_answers_pending_and_delete_removes(
    api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    registration_id = (await api.post("/registrations", json=create_body())).json()["id"]
    await sim.transition(registration_id, "PENDING")
    changed = create_body(tags=["#fixed"])

    updated = await api.put(f"/registrations/{registration_id}", json=changed)

    assert updated.status_code == 200, updated.text
    assert (updated.json()["status"], updated.json()["tags"]) == ("IN_QUEUE", ["#fixed"])
    assert [e["status"] for e in await sim.events(registration_id)][-1] == "IN_QUEUE"
    refused = await api.put(f"/registrations/{registration_id}", json={"policyId": "other"})
    assert refused.status_code == 400
    assert refused.json()["error"]["details"][0]["fieldViolations"][0]["field"] == "policyId"

    assert (await api.delete(f"/registrations/{registration_id}")).status_code == 204
    gone = await api.get(f"/registrations/{registration_id}")
    assert gone.status_code == 404
    again = await api.delete(f"/registrations/{registration_id}")
    assert again.json()["error"]["status"] == "NOT_FOUND"


async def test_a_decided_registration_refuses_an_update(
    api: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    registration_id = (await api.post("/registrations", json=create_body())).json()["id"]
    await sim.transition(registration_id, "REJECTED")

    refused = await api.put(f"/registrations/{registration_id}", json=create_body())

    assert refused.status_code == 400
    assert refused.json()["error"]["status"] == "FAILED_PRECONDITION"
