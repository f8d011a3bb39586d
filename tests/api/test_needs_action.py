"""A registration waiting on the customer says what to do and what Sinch asked (`needsAction`),
and `?needsAction=` lists those (issue 27, "Needs action")."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.settings import Settings
from devtools.simulator import SimulatorControl
from tests.api.conftest import put_document, refresh_catalog, sinch_document

Sessions = async_sessionmaker[AsyncSession]


def with_logs(registration_id: str, status: str, *logs: tuple[str, str, str]) -> dict[str, Any]:
    """Sinch's document in `status` with `logs` of (time, state, message), in no order."""
    document = sinch_document(registration_id, status)
    document["logs"] = [
        {"createTime": at, "registrationState": state, "message": message}
        for at, state, message in logs
    ]
    return document


async def test_what_each_waiting_state_asks(v1: httpx.AsyncClient, sessionmaker: Sessions) -> None:
    asked = "The company registration number does not match the company name."
    documents = [
        with_logs(
            "pending",
            "PENDING",
            ("2026-01-01T09:30:00", "PENDING", asked),
            ("2026-01-01T09:10:00", "IN_PROGRESS", "Picked up."),
        ),
        # Only an older state's message: nothing is said of what is asked now.
        with_logs("attachments", "PENDING_ATTACHMENTS", ("2026-01-01T09:10:00", "IN_QUEUE", "Hi")),
        with_logs("rejected", "REJECTED", ("2026-01-01T09:40:00", "REJECTED", "Brand unknown.")),
        with_logs("approved", "APPROVED", ("2026-01-01T09:40:00", "APPROVED", "Welcome.")),
        sinch_document("queued", "IN_QUEUE"),
    ]
    for document in documents:
        await put_document(sessionmaker, document)

    async def needs(registration_id: str) -> Any:
        answer = await v1.get(f"/v1/registrations/{registration_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()["needsAction"]

    pending = await needs("pending")
    assert pending["action"] == "update"
    # Its policy is not in any catalog here: which fields are concerned cannot be told.
    assert (pending["fields"], pending["attachments"]) == (None, None)
    assert pending["reason"]["message"] == asked
    assert pending["reason"]["state"] == "PENDING"
    assert pending["since"] is not None
    attachments = await needs("attachments")
    assert attachments["action"] == "upload_attachments"
    assert attachments["reason"] is None
    rejected = await needs("rejected")
    assert rejected == {**rejected, "action": "submit_again"}
    assert rejected["reason"]["message"] == "Brand unknown."
    assert await needs("approved") is None
    assert await needs("queued") is None

    async def listed(value: str) -> set[str]:
        answer = await v1.get("/v1/registrations", params={"needsAction": value})
        assert answer.status_code == 200, answer.text
        return {item["id"] for item in answer.json()["items"]}

    assert await listed("true") == {"pending", "attachments", "rejected"}
    assert await listed("false") == {"approved", "queued"}
    answer = await v1.get("/v1/registrations", params={"needsAction": "perhaps"})
    assert answer.status_code == 422


async def test_needs_action_names_what_the_policy_and_sinchs_message_tell(
    v1: httpx.AsyncClient, sim: SimulatorControl, settings: Settings, sessionmaker: Sessions
) -> None:
    await refresh_catalog(settings, sessionmaker)
    held = await sim.create_registration(
        policy_id="sim-policy-de-alphanumeric",
        status="PENDING_ATTACHMENTS",
        extra={"logs": []},  # Sinch said nothing yet
    )

    async def needs() -> Any:
        answer = await v1.post(f"/v1/registrations/{held['id']}/refresh")
        assert answer.status_code == 200, answer.text
        listed = (await v1.get("/v1/registrations", params={"needsAction": "true"})).json()
        assert [item["needsAction"] for item in listed["items"]] == [answer.json()["needsAction"]]
        return answer.json()["needsAction"]

    waiting = await needs()
    assert (waiting["action"], waiting["fields"]) == ("upload_attachments", [])
    assert waiting["attachments"] == ["trade-register-extract"]

    await sim.transition(
        held["id"], "PENDING_ATTACHMENTS", comment="Upload a letter of authorisation"
    )
    asked = await needs()
    assert asked["attachments"] == ["trade-register-extract", "letter-of-authorisation"]

    await sim.transition(
        held["id"], "PENDING", comment="Provide the website where customers see the brand"
    )
    pending = await needs()
    assert pending["action"] == "update"
    # A path into the registration's document, as a PUT of it would carry the field.
    website = "$.requestDetails[0].additionalDetails[0].companyDetails.website"
    assert (pending["fields"], pending["attachments"]) == ([website], [])

    await sim.transition(held["id"], "REJECTED", comment="The brand is too generic")
    rejected = await needs()
    assert (rejected["fields"], rejected["attachments"]) == ([], [])  # nothing named: no guess
