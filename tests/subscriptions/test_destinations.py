"""Where a delivery may go is checked when it is sent, not only when its subscription was made:
SUBSCRIPTION_ALLOWED_HOSTS as it stands now, and the addresses the URL's host resolves to
(loopback, private, link-local: only within SUBSCRIPTION_ALLOWED_NETWORKS).

A real loopback HTTP server stands for the receiver and records every request it gets; the
worker's own sending loop and HTTP client, a real database and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from ipaddress import ip_network

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes.sequencer import number_and_publish
from app.changes.signal import ChangeSignal
from app.core.db import utcnow
from app.core.jobs import create_redis
from app.core.models import Delivery
from app.core.settings import Settings
from app.subscriptions import service
from app.subscriptions.delivery import ADDRESS_REFUSED, delivery_client, post, tls_context
from app.subscriptions.schemas import SubscriptionIn
from app.subscriptions.sender import Sending, deliver_subscription
from tests.api.conftest import put_registration
from tests.conftest import make_settings
from tests.subscriptions.test_proxy import Recorder

SECRET = "whsec_" + "A" * 43 + "="
LOOPBACK = [ip_network("127.0.0.0/8"), ip_network("::1/128")]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    found = Recorder()
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    async with server:
        yield found


async def send_once(url: str, allowed: list[object]) -> str | None:
    http = delivery_client(tls_context(), allowed)  # type: ignore[arg-type]
    try:
        attempt = await post(http, url, [SECRET], "msg_1", "{}", seconds=5)
    finally:
        await http.close()
    return attempt.error


async def test_a_name_resolving_to_loopback_is_not_called_unless_allowed(
    recorder: Recorder,
) -> None:
    url = f"http://localhost:{recorder.port}/hook"
    assert await send_once(url, []) == ADDRESS_REFUSED
    assert recorder.lines == []
    assert await send_once(url, LOOPBACK) is None
    assert recorder.lines == ["POST /hook HTTP/1.1"]


async def test_deliveries_follow_the_settings_as_they_stand_when_sent(
    recorder: Recorder, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    url = f"http://127.0.0.1:{recorder.port}/hook"
    async with sessionmaker.begin() as session:
        subscription = await service.create(
            session, SubscriptionIn(url=url), allowed_hosts=["127.0.0.1"], now=utcnow()
        )
    await put_registration(sessionmaker, "reg-destination")  # a change, its delivery (outbox)
    await number_and_publish(sessionmaker, None)

    async def send(**overrides: object) -> Delivery:
        now_allowed = make_settings(
            settings.database_url,
            settings.redis_url,
            delivery_timeout_seconds=2,
            delivery_retry_seconds=[0.01],
            **overrides,
        )
        redis = create_redis(now_allowed)
        try:
            sending = Sending(sessionmaker, now_allowed, ChangeSignal(redis))
            await deliver_subscription(sending, subscription.id, budget_seconds=5)
        finally:
            await redis.aclose()
        async with sessionmaker() as session:
            return (await session.scalars(select(Delivery))).one()

    # SUBSCRIPTION_ALLOWED_HOSTS narrowed since the subscription was made: nothing is sent.
    refused = await send(
        subscription_allowed_hosts=["*.svc.internal"], subscription_allowed_networks=LOOPBACK
    )
    assert refused.state == "pending" and refused.attempts >= 1
    assert (
        refused.last_error == "not sent: the URL's host is not allowed (SUBSCRIPTION_ALLOWED_HOSTS)"
    )
    assert str(recorder.port) not in refused.last_error and "127.0.0.1" not in refused.last_error
    # The host allowed, but its address is loopback and no network allows it: nothing is sent.
    refused = await send(subscription_allowed_hosts=["127.0.0.1"])
    assert refused.last_error == ADDRESS_REFUSED
    assert recorder.lines == []
    # Both allowed: sent.
    sent = await send(
        subscription_allowed_hosts=["127.0.0.1"], subscription_allowed_networks=LOOPBACK
    )
    assert sent.state == "succeeded"
    assert recorder.lines == ["POST /hook HTTP/1.1"]
