"""The simulator's market requirements, as Sinch documents them: availability per registration
type, policies with field lists (an array of rules), attachments, prices, a disabled policy, and
a policy revised through the control API until reset."""

from __future__ import annotations

from typing import Any

import httpx

from devtools.simulator import SimulatorControl
from devtools.simulator.catalog import POLICY_DOCUMENTS


async def test_availability_per_registration_type(
    sim: SimulatorControl, api: httpx.AsyncClient
) -> None:
    async def codes(**params: str) -> list[str]:
        answer = await api.get("/markets/availability", params=params)
        assert answer.status_code == 200, answer.text
        return [m["marketCode"] for m in answer.json()["markets"]]

    assert await codes() == ["DE", "FR", "GB", "SE"]  # ALPHANUMERIC_SENDER_ID by default
    assert await codes(registrationType="LONG_NUMBER") == ["US"]
    assert await codes(registrationType="SHORT_CODE") == ["AU"]
    assert await codes(registrationType="RCS_AGENT") == []
    assert await codes(marketCode="SE") == ["SE"]
    assert await codes(marketCode="US") == []  # not for alphanumeric sender IDs
    named = (await api.get("/markets/availability", params={"marketCode": "GB"})).json()
    assert named == {"markets": [{"marketCode": "GB", "marketName": "United Kingdom"}]}
    assert (await sim.stats())["marketAvailability"] == 7


async def test_policies_as_sinch_documents_them(
    sim: SimulatorControl, api: httpx.AsyncClient
) -> None:
    documents = {pid: (await api.get(f"/policies/{pid}")).json() for pid in POLICY_DOCUMENTS}

    for document in documents.values():
        for template in document["jsonPolicy"].values():
            assert isinstance(template["properties"], list)
            assert all({"name", "type", "required"} <= set(item) for item in template["properties"])
        assert document["price"]["mode"] in ("AUTOMATIC", "MANUAL")
    disabled = [d for d in documents.values() if d["policyStatus"] == "DISABLED"]
    assert [d["id"] for d in disabled] == ["sim-policy-fr-alphanumeric"]
    assert disabled[0]["statusDisclaimer"]
    mandatory = {
        d["id"]: [a["id"] for a in d["attachments"] if a["mandatory"]] for d in documents.values()
    }
    assert mandatory["sim-policy-de-alphanumeric"] == ["trade-register-extract"]
    conditional = [
        item
        for d in documents.values()
        for template in d["jsonPolicy"].values()
        for item in template["properties"]
        if "x-requiredIf" in item
    ]
    assert conditional, "some field is required only when another has some value"


async def test_unknown_policy_answers_sinchs_error_body(
    sim: SimulatorControl, api: httpx.AsyncClient
) -> None:
    answer = await api.get("/policies/no-such-policy")

    assert answer.status_code == 404
    error: dict[str, Any] = answer.json()["error"]
    assert (error["code"], error["status"], error["details"]) == (404, "NOT_FOUND", [])


async def test_a_revised_policy_is_served_until_reset(
    sim: SimulatorControl, api: httpx.AsyncClient
) -> None:
    original = (await api.get("/policies/sim-policy-gb-alphanumeric")).json()
    revised = {**original, "policyStatus": "DISABLED", "statusDisclaimer": "Paused"}

    served = await sim.revise_policy("sim-policy-gb-alphanumeric", revised)

    assert served == revised
    assert (await api.get("/policies/sim-policy-gb-alphanumeric")).json() == revised
    bare = await sim.revise_policy("sim-policy-gb-alphanumeric", {"policyStatus": "ENABLED"})
    assert bare == {"id": "sim-policy-gb-alphanumeric", "policyStatus": "ENABLED"}
    assert (await api.get("/policies/sim-policy-gb-alphanumeric")).json() == {
        **bare,
        "registrationType": "ALPHANUMERIC_SENDER_ID",
    }
    await sim.reset()
    assert (await api.get("/policies/sim-policy-gb-alphanumeric")).json() == original
    async with httpx.AsyncClient(base_url=sim.base_url) as control:
        refused = await control.put("/_sim/policies/no-such-policy", json={})
    assert refused.status_code == 404
