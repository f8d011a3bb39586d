"""A registration's versions (issue 27): each distinct document Sinch gave, kept in the order
applied, served at `GET /v1/registrations/{id}/versions` with what changed between consecutive
ones. Over real HTTP, with the simulator as Sinch.

What a user relies on: after Sinch asked for a change (and later moved on), the versions tell what
Sinch's document said before and after, field by field; a document fetched
again unchanged adds no version; the list pages like every other; a token limited to another
project sees nothing of it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import PROJECTS
from app.core.settings import Settings
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.api.conftest import api_settings, assert_problem
from tests.api.test_submissions import PUBLIC_BASE_URL
from tests.support.tokens import bearer, make_token


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    return api_settings(sim_server, database_url, redis_url, public_base_url=PUBLIC_BASE_URL)


async def all_versions(v1: httpx.AsyncClient, registration_id: str) -> list[dict[str, Any]]:
    """Every version, walked one page of two at a time."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(10):
        answer = await v1.get(f"/v1/registrations/{registration_id}/versions", params=params)
        assert answer.status_code == 200, answer.text
        found += answer.json()["items"]
        cursor = answer.json()["nextCursor"]
        if cursor is None:
            return found
        params["cursor"] = cursor
    raise AssertionError("the walk did not end")


ASKED = "Describe the use case in more detail"


def changes_of(version: dict[str, Any]) -> dict[str, tuple[str, Any, Any]]:
    return {c["path"]: (c["change"], c["from"], c["to"]) for c in version["changes"]}


async def test_versions_tell_what_changed_between_the_documents_sinch_gave(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    created = await sim.create_registration(sender_id="ACME", tags=["#billing"])
    registration_id = created["id"]
    refresh = f"/v1/registrations/{registration_id}/refresh"
    assert (await v1.post(refresh)).status_code == 200
    # Fetched again unchanged: no new version.
    assert (await v1.post(refresh)).status_code == 200
    await sim.transition(registration_id, "PENDING", comment=ASKED)
    await v1.post(refresh)
    await sim.transition(registration_id, "IN_PROGRESS")
    await v1.post(refresh)

    versions = await all_versions(v1, registration_id)

    assert [(v["version"], v["source"]) for v in versions] == [
        (1, "refetch"),
        (2, "refetch"),
        (3, "refetch"),
    ]
    assert versions[0]["changes"] is None  # nothing before it to compare with
    asked = changes_of(versions[1])
    assert asked["$.status"] == ("changed", "IN_QUEUE", "PENDING")
    assert asked["$.logs[1].message"] == ("added", None, ASKED)
    assert asked["$.logs[1].registrationState"] == ("added", None, "PENDING")
    assert "$.tags[0]" not in asked  # what did not change is not listed
    assert changes_of(versions[2])["$.status"] == ("changed", "PENDING", "IN_PROGRESS")
    assert all(
        (c["from"] is None) == (c["change"] == "added") for v in versions[1:] for c in v["changes"]
    )
    # The newest version is the document the registration holds.
    local = (await v1.get(f"/v1/registrations/{registration_id}")).json()
    assert local["sinch"]["status"] == "IN_PROGRESS"

    # Deleted through the service: the last document, status DELETED, is its last version.
    deleted = await v1.delete(f"/v1/registrations/{registration_id}")
    assert deleted.status_code == 200, deleted.text
    last = (await all_versions(v1, registration_id))[-1]
    assert (last["version"], last["source"]) == (4, "submitted")
    assert changes_of(last)["$.status"] == ("changed", "IN_PROGRESS", "DELETED")


async def test_a_token_limited_to_another_project_gets_404(
    v1: httpx.AsyncClient,
    sim: SimulatorControl,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    registration_id = (await sim.create_registration())["id"]
    assert (await v1.post(f"/v1/registrations/{registration_id}/refresh")).status_code == 200
    async with sessionmaker.begin() as session:
        now = utcnow()
        await session.execute(
            insert(PROJECTS).values(
                id="proj-b", name="Brand B", key_id="key-b", created_at=now, updated_at=now
            )
        )
    other = await make_token(settings, "brand-b-reader", "read", projects=["proj-b"])
    reader = await make_token(settings, "reader", "read")
    path = f"/v1/registrations/{registration_id}/versions"

    assert_problem(await v1.get(path, headers=bearer(other)), 404)
    assert (await v1.get(path, headers=bearer(reader))).json()["items"][0]["version"] == 1
    assert_problem(await v1.get("/v1/registrations/no-such-one/versions"), 404)
    assert_problem(await v1.get(path, params={"cursor": "nonsense"}), 422)
