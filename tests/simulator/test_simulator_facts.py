"""The simulator's registration facts: its policy catalog, logs and comments, its facts oracle, and
the market details and policies it serves; over real HTTP."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from devtools.simulator import SimulatorControl
from devtools.simulator.state import CANNED_REASONS, MARKET_VERSIONS, POLICIES

LISTED = {
    "sim-policy-gb-alphanumeric",
    "sim-policy-se-alphanumeric-multi",
    "sim-policy-de-alphanumeric",
    "sim-policy-fr-alphanumeric",
    "sim-policy-us-longnumber",
    "sim-policy-au-shortcode",
}


def sender_ids(document: dict[str, Any]) -> list[str]:
    return [
        sender["senderId"]
        for details in document["requestDetails"]
        for sender in details["senderIdDetails"]
    ]


async def status_of(call: Any) -> int:
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await call
    status: int = caught.value.response.status_code
    return status


# --- the catalog ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy_id", "market", "registration_type", "multi"),
    [
        ("sim-policy-gb-alphanumeric", "GB", "ALPHANUMERIC_SENDER_ID", False),
        ("sim-policy-se-alphanumeric-multi", "SE", "ALPHANUMERIC_SENDER_ID", True),
        ("sim-policy-us-longnumber", "US", "LONG_NUMBER", False),
        ("sim-policy-unlisted", None, "ALPHANUMERIC_SENDER_ID", False),
    ],
)
async def test_each_policy_shapes_its_documents(
    sim: SimulatorControl, policy_id: str, market: str | None, registration_type: str, multi: bool
) -> None:
    created = await sim.create_registration(policy_id=policy_id)

    assert created["policyId"] == policy_id
    assert created["registrationType"] == registration_type  # the policy's type by default
    assert "marketCode" not in created  # as in Sinch's documents
    [details] = created["requestDetails"]
    senders = details["senderIdDetails"]
    assert all(set(sender) == {"senderId", "useCase"} for sender in senders)
    assert (2 <= len(senders) <= 5) if multi else len(senders) == 1
    assert len(set(sender_ids(created))) == len(senders)
    assert {"etaDate", "price", "attachments", "logs"} <= set(created)
    facts = await sim.facts(created["id"])
    assert facts["marketCode"] == market
    assert facts["policyId"] == policy_id
    assert facts["senderIds"] == sender_ids(created)


async def test_given_sender_ids_and_tags_are_kept(sim: SimulatorControl) -> None:
    multi = await sim.create_registration(
        policy_id="sim-policy-se-alphanumeric-multi",
        sender_ids=["ACME1", "ACME2", "ACME3"],
        tags=["#x"],
    )
    single = await sim.create_registration(sender_id="ACME", tags=[])

    assert sender_ids(multi) == ["ACME1", "ACME2", "ACME3"]
    assert multi["tags"] == ["#x"]
    assert sender_ids(single) == ["ACME"]
    assert single["tags"] == []
    assert (await sim.facts(multi["id"]))["senderIds"] == ["ACME1", "ACME2", "ACME3"]
    # Several sender IDs and no policy named: a multi-sender policy is picked.
    several = await sim.create_registration(sender_ids=["A1", "A2"])
    assert several["policyId"] == "sim-policy-se-alphanumeric-multi"


async def test_requests_sinch_would_refuse(sim: SimulatorControl) -> None:
    bad = [
        sim.create_registration(policy_id="no-such-policy"),
        sim.create_registration(policy_id="sim-policy-gb-alphanumeric", sender_ids=["A", "B"]),
        sim.create_registration(
            policy_id="sim-policy-us-longnumber", registration_type="ALPHANUMERIC_SENDER_ID"
        ),
        sim.create_registration(sender_id="A", sender_ids=["B"]),
        sim.create_registration(sender_ids=[]),
        sim.create_registration(sender_ids=["A", "A"]),
        sim.create_registration(sender_ids=[f"S{i}" for i in range(51)]),
        sim.create_registration(registration_type="SHORT_CODE", sender_ids=["A", "B"]),
    ]
    assert [await status_of(call) for call in bad] == [400] * len(bad)
    assert await sim.registrations() == []


async def test_unnamed_policies_are_picked_per_type(sim: SimulatorControl) -> None:
    alpha = [await sim.create_registration() for _ in range(80)]
    long_number = [
        await sim.create_registration(registration_type="LONG_NUMBER") for _ in range(20)
    ]
    short_code = await sim.create_registration(registration_type="SHORT_CODE")

    picked = Counter(d["policyId"] for d in alpha)
    assert set(picked) == {
        "sim-policy-gb-alphanumeric",
        "sim-policy-se-alphanumeric-multi",
        "sim-policy-unlisted",
    }
    assert picked.most_common(1)[0][0] == "sim-policy-gb-alphanumeric"
    assert {d["policyId"] for d in long_number} <= {
        "sim-policy-us-longnumber",
        "sim-policy-unlisted",
    }
    assert "sim-policy-us-longnumber" in {d["policyId"] for d in long_number}
    assert short_code["policyId"] == "sim-policy-unlisted"
    every = [s for d in [*alpha, *long_number, short_code] for s in sender_ids(d)]
    assert len(every) == len(set(every))  # generated sender IDs are unique
    multi = [d for d in alpha if d["policyId"] == "sim-policy-se-alphanumeric-multi"]
    assert all(2 <= len(sender_ids(d)) <= 5 for d in multi)
    assert sender_ids(multi[0])[0].endswith("A") and sender_ids(multi[0])[1].endswith("B")
    tags = [tuple(d["tags"]) for d in alpha]
    assert () in tags and any(tags)  # the rng added tags to some only
    assert all(len(t) <= 2 and all(tag.startswith("#") for tag in t) for t in tags)


# --- logs and comments ------------------------------------------------------------------------


async def test_only_commented_moves_are_logged(sim: SimulatorControl) -> None:
    created = await sim.create_registration(tags=[])
    rid = created["id"]

    quiet = await sim.transition(rid, "IN_PROGRESS")
    pending = await sim.transition(rid, "PENDING")
    commented = await sim.transition(rid, "IN_PROGRESS", comment="Documents received")
    attachments = await sim.transition(rid, "PENDING_ATTACHMENTS")
    held = await sim.transition(rid, "ON_HOLD")
    rejected = await sim.transition(rid, "REJECTED")
    approved = await sim.transition(rid, "APPROVED")
    own = await sim.transition(rid, "REJECTED", comment="Our own words")

    assert "comments" not in quiet and "comments" not in approved
    for event in (pending, attachments, held, rejected):
        assert event["comments"] in CANNED_REASONS[event["status"]]
    assert commented["comments"] == "Documents received"
    assert own["comments"] == "Our own words"
    logs = (await sim.registration(rid))["logs"]
    assert logs[0]["message"] == "Registration submitted"
    logged = [pending, commented, attachments, held, rejected, own]
    assert [(log["message"], log["registrationState"], log["createTime"]) for log in logs[1:]] == [
        (e["comments"], e["status"], e["createTime"]) for e in logged
    ]


async def test_update_time_follows_each_move(sim: SimulatorControl) -> None:
    created = await sim.create_registration(at="2026-02-01T10:00:00")
    await sim.transition(created["id"], "IN_PROGRESS", at="2026-02-01T11:00:00")

    truth = await sim.registration(created["id"])

    assert truth["createTime"] == "2026-02-01T10:00:00"
    assert truth["updateTime"] == "2026-02-01T11:00:00"


# --- the facts oracle -------------------------------------------------------------------------


async def test_facts_follow_the_registration(sim: SimulatorControl) -> None:
    created = await sim.create_registration(
        policy_id="sim-policy-gb-alphanumeric", sender_id="ACME", tags=["#t"], at="2026-03-01"
    )
    rid = created["id"]
    facts = await sim.facts(rid)
    assert facts == {
        "senderIds": ["ACME"],
        "marketCode": "GB",
        "policyId": "sim-policy-gb-alphanumeric",
        "tags": ["#t"],
        "etaDate": created["etaDate"],
        "price": created["price"],
        "statusSince": "2026-03-01T00:00:00",
        "reason": {
            "message": "Registration submitted",
            "state": "IN_QUEUE",
            "at": "2026-03-01T00:00:00",
        },
    }

    await sim.transition(rid, "IN_PROGRESS", at="2026-03-02T08:00:00")
    after_quiet = await sim.facts(rid)
    assert after_quiet["statusSince"] == "2026-03-02T08:00:00"
    assert after_quiet["reason"] == facts["reason"]  # no log: the reason stays

    await sim.transition(rid, "PENDING", at="2026-03-03T08:00:00")
    await sim.transition(rid, "PENDING", at="2026-03-04T08:00:00", comment="Still missing")
    pending = await sim.facts(rid)
    assert pending["statusSince"] == "2026-03-03T08:00:00"  # the same status is not entered again
    assert pending["reason"] == {
        "message": "Still missing",
        "state": "PENDING",
        "at": "2026-03-04T08:00:00",
    }

    # A back-dated entry is not the newest: the newest is by time.
    await sim.transition(rid, "ON_HOLD", at="2026-03-01T12:00:00", comment="Back-dated")
    held = await sim.facts(rid)
    assert held["statusSince"] == "2026-03-01T12:00:00"
    assert held["reason"] == pending["reason"]


async def test_facts_with_extra_fields(sim: SimulatorControl) -> None:
    marked = await sim.create_registration(
        policy_id="sim-policy-unlisted", extra={"marketCode": "NO", "etaDate": None}
    )
    relabelled = await sim.create_registration(extra={"policyId": "sim-policy-us-longnumber"})
    replaced = await sim.create_registration(extra={"requestDetails": "odd", "logs": []})

    facts = await sim.facts(marked["id"])
    assert (facts["marketCode"], facts["etaDate"]) == ("NO", None)
    assert (await sim.facts(relabelled["id"]))["marketCode"] == "US"
    odd = await sim.facts(replaced["id"])
    assert (odd["senderIds"], odd["reason"]) == (None, None)
    await sim.transition(replaced["id"], "REJECTED")
    assert (await sim.facts(replaced["id"]))["reason"]["state"] == "REJECTED"
    assert await status_of(sim.facts("missing")) == 404


# --- market details and policies --------------------------------------------------------------


async def test_market_details_pages(sim: SimulatorControl, api: httpx.AsyncClient) -> None:
    first = (await api.get("/markets/details", params={"pageSize": 1})).json()
    second = (
        await api.get(
            "/markets/details", params={"pageSize": 1, "pageToken": first["nextPageToken"]}
        )
    ).json()

    assert [v["marketCode"] for v in first["marketVersions"]] == ["GB"]
    assert first["nextPageToken"] and first["totalSize"] == 4
    assert [v["marketCode"] for v in second["marketVersions"]] == ["SE"]
    assert second["nextPageToken"]
    whole = (await api.get("/markets/details")).json()
    assert whole["marketVersions"][:2] == first["marketVersions"] + second["marketVersions"]
    assert [v["marketCode"] for v in whole["marketVersions"]] == ["GB", "SE", "DE", "FR"]
    assert whole["nextPageToken"] == ""
    version = whole["marketVersions"][0]
    assert version["registrationType"] == "ALPHANUMERIC_SENDER_ID"
    assert version["specialConditions"]["chainedSpecialConditions"][0]["policyId"] == (
        "sim-policy-gb-alphanumeric"
    )
    assert (await sim.stats())["marketDetails"] == 3


async def test_market_details_by_type_and_market(
    sim: SimulatorControl, api: httpx.AsyncClient
) -> None:
    async def listed(**params: str) -> list[dict[str, Any]]:
        answer = await api.get("/markets/details", params=params)
        assert answer.status_code == 200, answer.text
        versions: list[dict[str, Any]] = answer.json()["marketVersions"]
        return versions

    assert [v["marketCode"] for v in await listed(registrationType="LONG_NUMBER")] == ["US"]
    assert [v["marketCode"] for v in await listed(registrationType="SHORT_CODE")] == ["AU"]
    assert await listed(registrationType="RCS_AGENT") == []
    assert [v["marketCode"] for v in await listed(marketCode="SE")] == ["SE"]
    assert (await api.get("/markets/details", params={"pageToken": "x"})).status_code == 400
    # Every listed policy is in exactly one market version; the unlisted one in none.
    named = [
        p
        for kind in ("ALPHANUMERIC_SENDER_ID", "LONG_NUMBER", "SHORT_CODE")
        for v in await listed(registrationType=kind)
        for p in _policy_ids(v["specialConditions"])
    ]
    assert sorted(named) == sorted(LISTED)
    served = [
        *(await listed(registrationType="ALPHANUMERIC_SENDER_ID")),
        *(await listed(registrationType="LONG_NUMBER")),
        *(await listed(registrationType="SHORT_CODE")),
    ]
    assert sorted(MARKET_VERSIONS, key=lambda v: v["id"]) == sorted(served, key=lambda v: v["id"])


def _policy_ids(node: Any) -> list[str]:
    found = [node["policyId"]] if "policyId" in node else []
    for child in node.get("chainedSpecialConditions", []):
        found += _policy_ids(child)
    return found


async def test_market_details_need_a_token_and_take_faults(
    sim: SimulatorControl, api: httpx.AsyncClient
) -> None:
    await sim.inject_fault("status", status=503, count=1)

    faulted = await api.get("/markets/details")
    unauthorized = await api.get("/markets/details", headers={"Authorization": "Bearer forged"})

    assert (faulted.status_code, unauthorized.status_code) == (503, 401)
    assert (await sim.stats())["marketDetails"] == 2


async def test_added_market_versions_are_served_until_reset(
    sim: SimulatorControl, api: httpx.AsyncClient
) -> None:
    odd = [1, None, {"marketCode": "DK", "specialConditions": "nope"}]
    assert await sim.add_market_versions(odd) == 7
    assert (
        await sim.add_market_versions([{"marketCode": "CA"}], registration_type="LONG_NUMBER") == 2
    )

    served = (await api.get("/markets/details")).json()["marketVersions"]
    assert served[4:] == odd
    denmark = await api.get("/markets/details", params={"marketCode": "DK"})
    assert denmark.json()["marketVersions"] == [odd[2]]
    await sim.reset()
    assert len((await api.get("/markets/details")).json()["marketVersions"]) == 4


@pytest.mark.parametrize("policy_id", sorted(POLICIES))
async def test_policies_route(
    sim: SimulatorControl, api: httpx.AsyncClient, policy_id: str
) -> None:
    answer = await api.get(f"/policies/{policy_id}")

    assert answer.status_code == 200
    policy = answer.json()
    assert policy["id"] == policy_id
    expected = "MULTI_SENDER" if policy_id == "sim-policy-se-alphanumeric-multi" else "SINGLE"
    assert policy["policyMultiType"] == expected
    assert policy["registrationType"] == POLICIES[policy_id].registration_type
    assert policy["policyStatus"] in ("ENABLED", "DISABLED")
    template = policy["jsonPolicy"]["senderIdTemplate"]["properties"]
    assert "senderId" in [field["name"] for field in template]  # an array, as Sinch sends it
    assert (await api.get("/policies/no-such-policy")).status_code == 404
    assert (await sim.stats())["getPolicy"] == 2
