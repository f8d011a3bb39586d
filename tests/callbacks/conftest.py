from __future__ import annotations

import json
import uuid

import httpx

from tests.conftest import CALLBACK_SECRET
from tests.support.signing import sign

CALLBACK_PATH = "/callbacks/sinch/registrations"


def event_body(
    *,
    event_id: str | None = None,
    registration_id: str | None = None,
    status: str = "IN_PROGRESS",
    at: str = "2026-01-01T10:00:00",
) -> bytes:
    document = {
        "eventType": "REGISTRATION_STATUS_UPDATE",
        "projectId": "project-1",
        "resourceId": registration_id or str(uuid.uuid4()),
        "resourceType": "REGISTRATION",
        "status": status,
        "createTime": at,
    }
    if event_id is not None:
        document["eventId"] = event_id
    return json.dumps(document).encode()


async def post_signed(
    client: httpx.AsyncClient, body: bytes, *, secret: str = CALLBACK_SECRET
) -> httpx.Response:
    return await client.post(
        CALLBACK_PATH,
        content=body,
        headers={"X-Sinch-Signature": sign(body, secret), "Content-Type": "application/json"},
    )
