"""The audit trail: every write through the API leaves one entry, written in the write's own
transaction (a refused write leaves none), listed by `GET /v1/audit` for `write` tokens, newest
first, keyset-paginated."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.sequencer import number_and_publish
from app.core.settings import Settings
from app.main import create_app
from app.tokens.principal import Scope
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.api.conftest import api_settings, assert_problem, post_callback, put_registration
from tests.support.servers import serve
from tests.support.tokens import bearer, make_token, revoke_token


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    return api_settings(
        sim_server, database_url, redis_url, subscription_allowed_hosts=["127.0.0.1"]
    )


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with serve(create_app(settings)) as url:
        yield url


async def audit(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/audit", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_every_write_is_audited_with_who_what_target_and_where(
    base_url: str,
    settings: Settings,
    sim: SimulatorControl,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    token = await make_token(settings, "operator", Scope.WRITE)
    headers = {**bearer(token), "X-Forwarded-For": "203.0.113.9"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as api:
        registration = await sim.create_registration(lifecycle=["IN_PROGRESS"])
        assert (
            await api.post(f"/v1/registrations/{registration['id']}/refresh")
        ).status_code == 200

        body = json.dumps({"eventId": "evt-audit", "resourceId": "reg-a", "status": "APPROVED"})
        await post_callback(api, body.encode())
        [event] = (await api.get("/v1/events")).json()["items"]
        assert (await api.post(f"/v1/events/{event['id']}/replay")).status_code == 202

        created = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook"})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        changed = await api.patch(f"/v1/subscriptions/{sid}", json={"description": "billing"})
        assert changed.status_code == 200, changed.text
        rotated = await api.post(f"/v1/subscriptions/{sid}/rotate-secret")
        assert rotated.status_code == 200
        await put_registration(sessionmaker, "reg-delivered", "APPROVED")
        await number_and_publish(sessionmaker, None)  # on the feed: one delivery
        [delivery] = (await api.get(f"/v1/subscriptions/{sid}/deliveries")).json()["items"]
        assert (await api.post(f"/v1/deliveries/{delivery['id']}/retry")).status_code == 202
        assert (await api.delete(f"/v1/subscriptions/{sid}")).status_code == 204

        # Refused writes change nothing, and so leave no entry.
        assert_problem(await api.post("/v1/events/999999/replay"), 404)
        assert_problem(await api.delete(f"/v1/subscriptions/{sid}"), 404)
        assert_problem(await api.post("/v1/registrations/unknown-at-sinch/refresh"), 404)

        entries = await audit(api)

    assert [(e["action"], e["target"]) for e in reversed(entries)] == [
        ("token.create", "operator"),
        ("registration.refresh", registration["id"]),
        ("event.replay", str(event["id"])),
        ("subscription.create", sid),
        ("subscription.change", sid),
        ("subscription.rotate_secret", sid),
        ("delivery.retry", str(delivery["id"])),
        ("subscription.delete", sid),
    ]
    by_api = entries[:-1]
    assert {e["actor"] for e in by_api} == {"operator"}
    # The peer is 127.0.0.1, which uvicorn trusts as a proxy by default (--forwarded-allow-ips):
    # the client is then the address the header names.
    assert {e["client"] for e in by_api} == {"203.0.113.9"}
    assert {e["forwardedFor"] for e in by_api} == {"203.0.113.9"}
    assert entries[3]["detail"] == {"fields": ["description"]}
    assert entries[-1]["detail"] == {"scope": "write", "projects": None}
    times = [e["at"] for e in entries]
    assert times == sorted(times, reverse=True)
    # No secret in the trail: neither the token nor the subscription's secrets.
    text = json.dumps(entries)
    assert token not in text
    assert created.json()["secret"] not in text and rotated.json()["secret"] not in text


async def test_the_trail_is_paged_newest_first_and_filtered(
    base_url: str, settings: Settings
) -> None:
    token = await make_token(settings, "operator", Scope.WRITE)
    for number in range(5):
        await make_token(settings, f"reader-{number}", Scope.READ)
    await revoke_token(settings, "reader-2")
    async with httpx.AsyncClient(base_url=base_url, headers=bearer(token), timeout=30) as api:
        everything = await audit(api)
        assert len(everything) == 7
        walked: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await api.get("/v1/audit", params=params)).json()
            walked += page["items"]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert walked == everything
        revoked = await audit(api, action="token.revoke")
        assert [(e["target"], e["actor"]) for e in revoked] == [("reader-2", "test")]
        assert await audit(api, actor="nobody") == []
        assert_problem(await api.get("/v1/audit", params={"cursor": "nonsense"}), 422)


async def test_the_trail_needs_a_write_token(base_url: str, settings: Settings) -> None:
    reader = await make_token(settings, "reporting", Scope.READ)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as api:
        assert_problem(await api.get("/v1/audit"), 401)
        assert_problem(await api.get("/v1/audit", headers=bearer(reader)), 403)
