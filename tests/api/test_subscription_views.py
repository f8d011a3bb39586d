"""What the API and the console show of subscriptions: a `read` token never sees the secrets a
URL may carry (credentials, query values), and the console's Retry says what will really happen
to a delivery queued behind an earlier one of its registration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.sequencer import number_and_publish
from app.core.models import Delivery
from app.core.settings import Settings
from app.tokens.principal import Scope
from devtools.simulator import SimulatorServer
from tests.api.conftest import API_TOKEN, AUTH, api_settings, put_registration
from tests.api.test_console_sessions import sign_in
from tests.support.tokens import bearer, make_token

SECRET_URL = "http://127.0.0.1:9/hooks?token=receiver-secret-123&team=a&bare-secret-456"
REDACTED_URL = "http://127.0.0.1:9/hooks?token=REDACTED&team=REDACTED&REDACTED"
T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    return api_settings(
        sim_server, database_url, redis_url, subscription_allowed_hosts=["127.0.0.1"]
    )


async def test_a_read_token_sees_urls_without_their_secrets(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    created = await api.post("/v1/subscriptions", json={"url": SECRET_URL}, headers=AUTH)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    reader = bearer(await make_token(settings, "subscription-reader", Scope.READ))

    assert (await api.get(f"/v1/subscriptions/{sid}", headers=AUTH)).json()["url"] == SECRET_URL
    assert (await api.get(f"/v1/subscriptions/{sid}", headers=reader)).json()["url"] == (
        REDACTED_URL
    )
    [listed] = (await api.get("/v1/subscriptions", headers=reader)).json()["items"]
    assert listed["url"] == REDACTED_URL

    # The console, signed in with the read token: neither page shows a secret.
    token = reader["Authorization"].removeprefix("Bearer ")
    async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as console:
        await sign_in(console, token)
        for page in ("/console/subscriptions", f"/console/subscriptions/{sid}"):
            text = (await console.get(page)).text
            assert "REDACTED" in text, page
            assert "receiver-secret-123" not in text and "bare-secret-456" not in text, page


async def test_retry_says_when_the_delivery_waits_for_an_earlier_one(
    api: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    created = await api.post("/v1/subscriptions", json={"url": SECRET_URL}, headers=AUTH)
    sid = created.json()["id"]
    await put_registration(sessionmaker, "reg-queued", "IN_PROGRESS", at=T0)
    await put_registration(sessionmaker, "reg-queued", "APPROVED", at=T0 + timedelta(hours=1))
    await number_and_publish(sessionmaker, None)
    async with sessionmaker.begin() as session:
        first, second = (await session.scalars(select(Delivery).order_by(Delivery.change_id))).all()
        # The first still waits for its next try; the second was given up.
        await session.execute(
            update(Delivery)
            .where(Delivery.id == first.id)
            .values(next_attempt_at=datetime.now(UTC) + timedelta(hours=2), attempts=3)
        )
        await session.execute(
            update(Delivery).where(Delivery.id == second.id).values(state="failed")
        )

    async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as console:
        await sign_in(console, API_TOKEN)
        page = (await console.get(f"/console/subscriptions/{sid}")).text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        retried = await console.post(
            f"/console/deliveries/{second.id}/retry",
            data={"csrf": csrf, "subscription_id": sid},
            follow_redirects=True,
        )
    assert retried.status_code == 200
    assert "will be sent again now" not in retried.text
    assert f"queued behind delivery {first.id} of the same registration" in retried.text
