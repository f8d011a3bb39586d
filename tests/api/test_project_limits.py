"""Two Sinch projects' data in one deployment, read through the API on loopback: `projectId` on
every item, the `projectId` filter, and tokens and subscriptions limited to projects (issue 26).

The rows are written by the service's own writers (apply_snapshot with the project, the change
sequencer); the second project's row is put into `projects` as `project add` would keep it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import ip_network

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.sequencer import number_and_publish
from app.changes.signal import ChangeSignal
from app.core.db import utcnow
from app.core.jobs import create_redis
from app.core.models import PROJECTS
from app.core.settings import Settings
from app.subscriptions.sender import Sending, deliver_subscription
from devtools.simulator import SimulatorServer
from tests.api.conftest import api_settings, assert_problem, put_registration
from tests.conftest import make_settings
from tests.support.projects import settings_project
from tests.support.tokens import bearer, make_token

Sessions = async_sessionmaker[AsyncSession]
B = "proj-b"


@dataclass
class Seeded:
    a: str
    """The settings' project (its id is the simulator's)."""


async def _seed(sessions: Sessions) -> Seeded:
    """Project B beside the settings' project A; registrations a1, b1, a2 in that order (so a
    reader of A's changes must skip B's between its own)."""
    async with sessions.begin() as session:
        a = await settings_project(session)
        now = utcnow()
        await session.execute(
            insert(PROJECTS).values(
                id=B, name="Brand B", key_id="key-b", created_at=now, updated_at=now
            )
        )
    await put_registration(sessions, "reg-a1", project_id=a)
    await put_registration(sessions, "reg-b1", "APPROVED", project_id=B)
    await put_registration(sessions, "reg-a2", project_id=a)
    await number_and_publish(sessions, None)
    return Seeded(a=a)


@pytest.fixture
async def seeded(v1: httpx.AsyncClient, sessionmaker: Sessions) -> Seeded:
    return await _seed(sessionmaker)  # after the API started: the settings' project is renamed


async def test_items_carry_their_project_and_lists_filter_by_it(
    v1: httpx.AsyncClient, seeded: Seeded
) -> None:
    everything = (await v1.get("/v1/registrations")).json()["items"]
    assert {(r["id"], r["projectId"]) for r in everything} == {
        ("reg-a1", seeded.a),
        ("reg-a2", seeded.a),
        ("reg-b1", B),
    }
    only_b = (await v1.get("/v1/registrations", params={"projectId": B})).json()["items"]
    assert [r["id"] for r in only_b] == ["reg-b1"]
    history = (await v1.get("/v1/registrations/reg-b1/history")).json()["items"]
    assert {h["projectId"] for h in history} == {B}
    changes = (await v1.get("/v1/changes", params={"projectId": B})).json()
    assert [(c["registrationId"], c["projectId"]) for c in changes["items"]] == [("reg-b1", B)]
    assert changes["items"][0]["registration"]["projectId"] == B
    # The cursor moves past A's changes the filter skipped, to the end of the feed.
    assert changes["nextCursor"] == (await v1.get("/v1/changes")).json()["nextCursor"]
    counts = (await v1.get("/v1/counts", params={"projectId": B})).json()
    assert counts["registrationsByStatus"] == {"APPROVED": 1}
    unknown = (await v1.get("/v1/registrations", params={"projectId": "nope"})).json()
    assert unknown == {"items": [], "nextCursor": None}


async def test_projects_are_listed_without_their_secrets(
    v1: httpx.AsyncClient, seeded: Seeded, settings: Settings
) -> None:
    listed = (await v1.get("/v1/projects")).json()["items"]
    assert [(p["id"], p["credentialsSet"], p["fromSettings"]) for p in listed] == sorted(
        [(seeded.a, True, True), (B, False, False)]
    )
    one = (await v1.get(f"/v1/projects/{B}")).json()
    assert one["name"] == "Brand B" and one["keyId"] == "key-b"
    assert set(one) == {
        "id",
        "name",
        "keyId",
        "credentialsSet",
        "fromSettings",
        "createdAt",
        "updatedAt",
    }
    assert settings.sinch_key_secret is not None
    text = (await v1.get("/v1/projects")).text
    assert settings.sinch_key_secret.get_secret_value() not in text
    assert_problem(await v1.get("/v1/projects/nope"), 404)


async def test_a_token_limited_to_a_project_sees_only_that_project(
    api: httpx.AsyncClient, settings: Settings, seeded: Seeded
) -> None:
    token = await make_token(settings, "only-a", "read", projects=[seeded.a])
    only_a = httpx.AsyncClient(base_url=api.base_url, headers=bearer(token), timeout=30)
    async with only_a:
        listed = (await only_a.get("/v1/registrations")).json()["items"]
        assert [r["id"] for r in listed] == ["reg-a1", "reg-a2"]
        # Another project's registration answers exactly as one that does not exist.
        hidden = await only_a.get("/v1/registrations/reg-b1")
        missing = await only_a.get("/v1/registrations/reg-none")
        assert_problem(hidden, 404)
        assert hidden.json() == missing.json()
        assert_problem(await only_a.get("/v1/registrations/reg-b1/history"), 404)
        # A filter naming a project outside the limit: nothing, as for an unknown project.
        outside = await only_a.get("/v1/registrations", params={"projectId": B})
        assert outside.json() == {"items": [], "nextCursor": None}
        feed = (await only_a.get("/v1/changes")).json()["items"]
        assert [c["registrationId"] for c in feed] == ["reg-a1", "reg-a2"]
        counts = (await only_a.get("/v1/counts")).json()
        assert counts["registrationsByStatus"] == {"IN_QUEUE": 2}
        assert [p["id"] for p in (await only_a.get("/v1/projects")).json()["items"]] == [seeded.a]
        assert_problem(await only_a.get(f"/v1/projects/{B}"), 404)
        # The stream skips B's change between A's two.
        async with only_a.stream("GET", "/v1/changes/stream") as stream:
            data = []
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    data.append(json.loads(line[6:]))
                if len(data) == 2:
                    break
        assert [(c["registrationId"], c["projectId"]) for c in data] == [
            ("reg-a1", seeded.a),
            ("reg-a2", seeded.a),
        ]


async def test_a_limited_writer_acts_only_in_its_projects(
    api: httpx.AsyncClient, v1: httpx.AsyncClient, settings: Settings, seeded: Seeded
) -> None:
    token = await make_token(settings, "writer-b", "write", projects=[B])
    writer_b = httpx.AsyncClient(base_url=api.base_url, headers=bearer(token), timeout=30)
    async with writer_b:
        # A's registration: 404 before Sinch is asked, as for one never heard of.
        assert_problem(await writer_b.post("/v1/registrations/reg-a1/refresh"), 404)
        # Subscriptions: its own are limited to its projects; naming another project is refused
        # as naming none that exists.
        made = await writer_b.post("/v1/subscriptions", json={"url": "https://hooks.example/b"})
        assert made.status_code == 201, made.text
        assert made.json()["projectIds"] == [B]
        refused = await writer_b.post(
            "/v1/subscriptions",
            json={"url": "https://hooks.example/a", "projectIds": [seeded.a]},
        )
        unknown = await writer_b.post(
            "/v1/subscriptions", json={"url": "https://hooks.example/a", "projectIds": ["nope"]}
        )
        assert_problem(refused, 422)
        assert_problem(unknown, 422)
        assert refused.json()["detail"].replace(seeded.a, "X") == unknown.json()["detail"].replace(
            "nope", "X"
        )
        everyone = await v1.post("/v1/subscriptions", json={"url": "https://hooks.example/all"})
        assert everyone.json()["projectIds"] is None
        seen = [s["id"] for s in (await writer_b.get("/v1/subscriptions")).json()["items"]]
        assert seen == [made.json()["id"]]
        assert_problem(await writer_b.get(f"/v1/subscriptions/{everyone.json()['id']}"), 404)
        assert_problem(await writer_b.delete(f"/v1/subscriptions/{everyone.json()['id']}"), 404)
        widened = await writer_b.patch(
            f"/v1/subscriptions/{made.json()['id']}", json={"projectIds": None}
        )
        assert_problem(widened, 422)
    # Its audit entry belongs to no project; the unlimited token sees it, filtered by B it does
    # not show.
    audit = (await v1.get("/v1/audit", params={"projectId": B})).json()["items"]
    assert all(entry["projectId"] == B for entry in audit)


@dataclass
class Bodies:
    """A loopback receiver answering 200, keeping each request's JSON body."""

    port: int = 0
    received: list[dict[str, object]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        self.received.append(json.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Bodies]:
    found = Bodies()
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    async with server:
        yield found


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    """Subscriptions may name the loopback receiver and `hooks.example`."""
    return api_settings(
        sim_server,
        database_url,
        redis_url,
        subscription_allowed_hosts=["127.0.0.1", "hooks.example"],
    )


async def test_a_subscription_limited_to_a_project_receives_only_its_changes(
    v1: httpx.AsyncClient, sessionmaker: Sessions, settings: Settings, receiver: Bodies
) -> None:
    seeded = await _seed(sessionmaker)
    made = await v1.post(
        "/v1/subscriptions",
        json={"url": f"http://127.0.0.1:{receiver.port}/b", "projectIds": [B]},
    )
    assert made.status_code == 201, made.text
    # Changes after it exists, of both projects, interleaved.
    await put_registration(sessionmaker, "reg-a3", project_id=seeded.a)
    await put_registration(sessionmaker, "reg-b2", project_id=B)
    await put_registration(sessionmaker, "reg-a4", project_id=seeded.a)
    await number_and_publish(sessionmaker, None)
    deliveries = (await v1.get(f"/v1/subscriptions/{made.json()['id']}/deliveries")).json()
    assert [(d["registrationId"], d["projectId"]) for d in deliveries["items"]] == [("reg-b2", B)]

    sending_settings = make_settings(
        settings.database_url,
        settings.redis_url,
        subscription_allowed_hosts=["127.0.0.1"],
        subscription_allowed_networks=[ip_network("127.0.0.0/8")],
        delivery_timeout_seconds=2,
    )
    redis = create_redis(sending_settings)
    try:
        sending = Sending(sessionmaker, sending_settings, ChangeSignal(redis))
        await deliver_subscription(sending, made.json()["id"], budget_seconds=5)
    finally:
        await redis.aclose()
    sent = (await v1.get(f"/v1/subscriptions/{made.json()['id']}/deliveries")).json()["items"]
    assert [(d["state"], d["lastError"]) for d in sent] == [("succeeded", None)]
    received = [message["data"] for message in receiver.received]
    assert [(d["registrationId"], d["projectId"]) for d in received] == [("reg-b2", B)]  # type: ignore[index]


async def test_no_limit_given_means_every_project(
    v1: httpx.AsyncClient, settings: Settings, seeded: Seeded, api: httpx.AsyncClient
) -> None:
    token = await make_token(settings, "everything", "read")
    async with httpx.AsyncClient(base_url=api.base_url, headers=bearer(token)) as anyone:
        listed = (await anyone.get("/v1/registrations")).json()["items"]
    assert len(listed) == 3
    # The bootstrap token (INTERNAL_API_TOKENS) is never limited either.
    assert len((await v1.get("/v1/registrations")).json()["items"]) == 3
