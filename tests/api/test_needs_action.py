"""A registration waiting on the customer says what to do and what Sinch asked (`needsAction`),
and `?needsAction=` lists those (issue 27, "Needs action")."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.api.conftest import put_document, sinch_document

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
