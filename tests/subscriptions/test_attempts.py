"""The attempts log: every POST of a delivery kept with what was sent and what the receiver
answered, served by `/v1/subscriptions/{id}/attempts` and `/v1/deliveries/{id}/attempts`.

Real pieces: the API on loopback, the worker's own sending loop (`deliver_subscription`) and HTTP
client, a receiver over real HTTP on loopback, PostgreSQL and Redis. The receiver's script
decides each answer; its record is what the log must show.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import jsonschema_rs
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from app.changes.sequencer import number_and_publish
from app.core.db import utcnow
from app.core.models import DeliveryAttempt
from app.core.settings import Settings
from app.subscriptions import repository, service
from app.subscriptions.schemas import SubscriptionIn
from tests.api.conftest import AUTH, put_registration
from tests.support.receivers import Receiver, receiving, receiving_settings, send_all

LONG_ANSWER = "é" * 3000  # 6000 bytes: more than the 4 KiB kept, cut inside a character


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return receiving_settings(database_url, redis_url)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving(answers=[(500, LONG_ANSWER)]) as found:
        yield found


async def listed(v1: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a listing, walking its pages."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        answer = await v1.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        items.extend(answer.json()["items"])
        cursor = answer.json()["nextCursor"]
        if cursor is None:
            return items
    raise AssertionError("the listing never ended")


async def test_every_attempt_is_logged_with_what_was_sent_and_answered(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    api: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    async with sessionmaker.begin() as session:
        subscription = await service.create(
            session, SubscriptionIn(url=receiver.url), allowed_hosts=["127.0.0.1"], now=utcnow()
        )
    began = utcnow()
    for number in range(3):
        await put_registration(sessionmaker, f"reg-attempts-{number}")
    await number_and_publish(sessionmaker, None)
    # The first POST is answered 500: its delivery is retried (0.01 s later) and succeeds.
    for _ in range(3):
        await send_all(settings, sessionmaker, subscription.id)
        if len(receiver.got) == 4:
            break
    assert len(receiver.got) == 4

    async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH, timeout=30) as v1:
        path = f"/v1/subscriptions/{subscription.id}/attempts"
        attempts = await listed(v1, path, limit=1)  # one per page: the cursor walks them all
        assert len(attempts) == 4
        times = [a["attemptedAt"] for a in attempts]
        assert times == sorted(times, reverse=True), "not newest first"
        assert len({a["id"] for a in attempts}) == 4

        failed = [a for a in attempts if a["responseStatus"] == 500]
        assert len(failed) == 1
        [failure] = failed
        assert failure["error"] == "answered 500"
        assert failure["responseBody"] == LONG_ANSWER.encode()[:4096].decode(errors="replace")
        retried = [a for a in attempts if a["deliveryId"] == failure["deliveryId"]]
        assert len(retried) == 2 and retried[0]["responseStatus"] == 200

        # What the log says was sent is what the receiver got, byte for byte.
        by_signature = {
            headers["webhook-signature"]: (headers, body) for headers, body in receiver.got
        }
        for attempt in attempts:
            headers, body = by_signature[attempt["requestHeaders"]["webhook-signature"]]
            for name, value in attempt["requestHeaders"].items():
                assert headers[name] == value
            assert attempt["payload"] == json.loads(body)
            assert attempt["payload"]["data"]["seq"] == attempt["seq"]
            assert headers["webhook-id"] == f"msg_{attempt['deliveryId']}"
            assert attempt["latencyMs"] >= 0
            assert subscription.secret not in json.dumps(attempt)
            assert attempt["attemptedAt"] >= began.isoformat()
        assert {a["responseBody"] for a in attempts if a["responseStatus"] == 200} == {"ok"}
        assert all(a["error"] is None for a in attempts if a["responseStatus"] == 200)

        # Filters.
        only_failed = await listed(v1, path, outcome="failed")
        assert [a["id"] for a in only_failed] == [failure["id"]]
        succeeded = await listed(v1, path, outcome="succeeded")
        assert {a["id"] for a in succeeded} == {a["id"] for a in attempts} - {failure["id"]}
        later = (utcnow() + timedelta(seconds=1)).isoformat()
        assert await listed(v1, path, since=later) == []
        assert len(await listed(v1, path, since=began.isoformat())) == 4

        # Per delivery.
        of_delivery = await listed(v1, f"/v1/deliveries/{failure['deliveryId']}/attempts")
        assert [a["id"] for a in of_delivery] == [a["id"] for a in retried]

        # Bad input: 4xx problems.
        assert (await v1.get(path, params={"outcome": "maybe"})).status_code == 422
        assert (await v1.get(path, params={"since": "yesterday"})).status_code == 422
        assert (await v1.get(path, params={"cursor": "x"})).status_code == 422
        assert (await v1.get("/v1/subscriptions/sub_nothing/attempts")).status_code == 404
        assert (await v1.get("/v1/deliveries/987654321/attempts")).status_code == 404
        assert (await api.get(path)).status_code == 401

        # Deleting the subscription deletes its attempts.
        assert (await v1.delete(f"/v1/subscriptions/{subscription.id}")).status_code == 204
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(DeliveryAttempt)) == 0


async def test_attempts_past_their_retention_are_pruned(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    async with sessionmaker.begin() as session:
        subscription = await service.create(
            session, SubscriptionIn(url=receiver.url), allowed_hosts=["127.0.0.1"], now=utcnow()
        )
    await put_registration(sessionmaker, "reg-prune")
    await number_and_publish(sessionmaker, None)
    await send_all(settings, sessionmaker, subscription.id)
    async with sessionmaker() as session:
        kept = (await session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id))).all()
    assert len(kept) == 2  # the 500, then the retry's 200
    cutoff = kept[1].attempted_at  # strictly after the first attempt, not the second
    deleted, complete = await service.prune_attempts(sessionmaker, before=cutoff, stop_at=0.0)
    assert (deleted, complete) == (1, True)
    async with sessionmaker() as session:
        left = (await session.scalars(select(DeliveryAttempt))).all()
    assert [a.id for a in left] == [kept[1].id]


async def test_a_test_message_is_signed_sent_now_and_its_outcome_answered(
    sessionmaker: async_sessionmaker[AsyncSession], api: httpx.AsyncClient, receiver: Receiver
) -> None:
    async with sessionmaker.begin() as session:
        subscription = await service.create(
            session, SubscriptionIn(url=receiver.url), allowed_hosts=["127.0.0.1"], now=utcnow()
        )
        # A host the settings do not allow (they narrowed since it was made): never called.
        refused = await service.create(
            session,
            SubscriptionIn(url=receiver.url.replace("127.0.0.1", "localhost")),
            allowed_hosts=["localhost"],
            now=utcnow(),
        )
    async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH, timeout=30) as v1:
        path = f"/v1/subscriptions/{subscription.id}/test"
        failed = await v1.post(path)  # the receiver's first answer: 500 and a long body
        assert failed.status_code == 200, failed.text
        assert failed.json()["delivered"] is False
        assert failed.json()["responseStatus"] == 500
        assert failed.json()["error"] == "answered 500"
        assert len(failed.json()["responseBody"].encode()) <= 4096

        answer = await v1.post(path)
        assert answer.status_code == 200, answer.text
        outcome = answer.json()
        assert outcome["delivered"] is True and outcome["error"] is None
        assert outcome["responseStatus"] == 200 and outcome["responseBody"] == "ok"
        assert outcome["latencyMs"] >= 0
        assert set(outcome) == {"delivered", "responseStatus", "responseBody", "latencyMs", "error"}

        headers, body = receiver.got[-1]
        Webhook(subscription.secret).verify(body, headers)  # raises when not genuine
        message = json.loads(body)
        assert message["type"] == "ping"
        assert message["data"]["subscriptionId"] == subscription.id
        assert headers["webhook-id"].startswith("msg_ping_")
        assert receiver.got[0][0]["webhook-id"] != headers["webhook-id"]

        sent = len(receiver.got)
        not_sent = (await v1.post(f"/v1/subscriptions/{refused.id}/test")).json()
        assert not_sent["delivered"] is False and not_sent["responseStatus"] is None
        assert not_sent["error"] == (
            "not sent: the URL's host is not allowed (SUBSCRIPTION_ALLOWED_HOSTS)"
        )
        assert len(receiver.got) == sent

        audit = (await v1.get("/v1/audit", params={"action": "subscription.test"})).json()
        assert [(e["target"], e["detail"]["delivered"]) for e in audit["items"]] == [
            (refused.id, False),
            (subscription.id, True),
            (subscription.id, False),
        ]
        assert (await v1.post("/v1/subscriptions/sub_nothing/test")).status_code == 404
        # Not a delivery: the attempts log holds no test message.
        assert (await v1.get(f"/v1/subscriptions/{subscription.id}/attempts")).json()["items"] == []


async def test_failed_deliveries_are_recovered_in_bulk_and_a_backlog_on_enabling(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    api: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    receiver.answers.clear()  # 200 to everything
    async with sessionmaker.begin() as session:
        subscription = await service.create(
            session, SubscriptionIn(url=receiver.url), allowed_hosts=["127.0.0.1"], now=utcnow()
        )
    began = utcnow()
    for number in range(3):
        await put_registration(sessionmaker, f"reg-recover-{number}")
    await number_and_publish(sessionmaker, None)
    # Disabled before they went out (as after a 410): its pending deliveries end failed.
    async with sessionmaker.begin() as session:
        await repository.disable(session, subscription.id, "the receiver answered 410", utcnow())
    base = f"/v1/subscriptions/{subscription.id}"

    async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH, timeout=30) as v1:

        async def states() -> list[str]:
            answer = await v1.get(f"{base}/deliveries")
            return sorted(d["state"] for d in answer.json()["items"])

        assert await states() == ["failed"] * 3
        dry = await v1.post(
            f"{base}/retry-failed", json={"since": began.isoformat(), "dryRun": True}
        )
        assert dry.status_code == 200, dry.text
        assert dry.json() == {"count": 3, "dryRun": True}
        assert await states() == ["failed"] * 3, "a dry run changed something"
        refused = await v1.post(f"{base}/retry-failed", json={"since": began.isoformat()})
        assert refused.status_code == 409, refused.text

        enabled = await v1.post(f"{base}/enable", json={"backlog": True})
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["retried"] == 3 and enabled.json()["skipped"] == 0
        assert enabled.json()["subscription"]["enabled"] is True
        await send_all(settings, sessionmaker, subscription.id)
        assert len(receiver.got) == 3 and await states() == ["succeeded"] * 3
        assert (await v1.post(f"{base}/enable", json={"backlog": True})).status_code == 409

        # Disabled with a delivery pending; enabled again without its backlog: skipped.
        await put_registration(sessionmaker, "reg-recover-late")
        await number_and_publish(sessionmaker, None)
        assert (await v1.patch(base, json={"enabled": False})).status_code == 200
        enabled = await v1.post(f"{base}/enable", json={"backlog": False})
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["retried"] == 0 and enabled.json()["skipped"] == 1
        await send_all(settings, sessionmaker, subscription.id)
        assert len(receiver.got) == 3, "a skipped delivery was sent"
        [skipped] = [
            d
            for d in (await v1.get(f"{base}/deliveries")).json()["items"]
            if d["state"] == "failed"
        ]
        assert skipped["lastError"] == service.SKIPPED

        # Enabled: every failure since a time, retried in one call.
        later = utcnow().isoformat()
        assert (await v1.post(f"{base}/retry-failed", json={"since": later})).json()["count"] == 0
        retried = await v1.post(f"{base}/retry-failed", json={"since": began.isoformat()})
        assert retried.json() == {"count": 1, "dryRun": False}
        await send_all(settings, sessionmaker, subscription.id)
        assert len(receiver.got) == 4 and await states() == ["succeeded"] * 4

        audit = (await v1.get("/v1/audit")).json()["items"]
        actions = [(e["action"], e["detail"]) for e in audit if e["target"] == subscription.id]
        assert ("subscription.retry_failed", {"since": later, "count": 0}) in actions
        assert ("subscription.retry_failed", {"since": began.isoformat(), "count": 1}) in actions
        assert (
            "subscription.enable",
            {"backlog": True, "retried": 3, "skipped": 0},
        ) in actions

        # Bad input.
        assert (await v1.post(f"{base}/retry-failed", json={"since": "x"})).status_code == 422
        assert (await v1.post(f"{base}/retry-failed", json={})).status_code == 422
        assert (await v1.post(f"{base}/enable", json={})).status_code == 422
        gone = "/v1/subscriptions/sub_nothing"
        assert (await v1.post(f"{gone}/enable", json={"backlog": True})).status_code == 404
        assert (
            await v1.post(f"{gone}/retry-failed", json={"since": later, "dryRun": True})
        ).status_code == 404


async def test_health_over_a_day_and_the_failing_flag(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    api: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    receiver.answers[:] = [(503, "busy"), (404, "no")]  # then 200
    async with sessionmaker.begin() as session:
        subscription = await service.create(
            session, SubscriptionIn(url=receiver.url), allowed_hosts=["127.0.0.1"], now=utcnow()
        )
    await put_registration(sessionmaker, "reg-health")
    await number_and_publish(sessionmaker, None)
    for _ in range(4):
        await send_all(settings, sessionmaker, subscription.id)
        if len(receiver.got) == 3:
            break
    assert len(receiver.got) == 3
    base = f"/v1/subscriptions/{subscription.id}"
    async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH, timeout=30) as v1:
        answer = await v1.get(f"{base}/health")
        assert answer.status_code == 200, answer.text
        health = answer.json()
        assert health["attempts"] == 3 and health["succeeded"] == 1
        assert health["successRate"] == pytest.approx(1 / 3)
        assert health["failuresByCause"] == {"http_5xx": 1, "http_4xx": 1}
        assert 0 <= health["latencyMs"]["p50"] <= health["latencyMs"]["p95"]
        assert sum(h["succeeded"] + h["failed"] for h in health["hourly"]) == 3
        assert health["failing"] is False and health["failingSince"] is None

        # Every attempt failed for 20 minutes (more than the 15 of the default): flagged.
        async with sessionmaker.begin() as session:
            await repository.note_failure(
                session, subscription.id, utcnow() - timedelta(minutes=20)
            )
        health = (await v1.get(f"{base}/health")).json()
        assert health["failing"] is True and health["failingSince"] is not None
        metrics = (await api.get("/metrics")).text
        assert f'subscription_failing{{subscription="{subscription.id}"}} 1.0' in metrics
        assert (await v1.get("/v1/subscriptions/sub_nothing/health")).status_code == 404


async def test_the_catalog_describes_what_is_sent_and_kinds_filter_deliveries(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    api: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    receiver.answers.clear()
    async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH, timeout=30) as v1:
        answer = await v1.get("/v1/event-types")
        assert answer.status_code == 200, answer.text
        catalog = {item["type"]: item for item in answer.json()["items"]}
        assert set(catalog) == {"registration.changed", "ping"}
        assert all(item["version"] == 1 and item["description"] for item in catalog.values())
        assert (await api.get("/v1/event-types")).status_code == 401

        made = await v1.post("/v1/subscriptions", json={"url": receiver.url, "kinds": ["status"]})
        assert made.status_code == 201, made.text
        assert made.json()["kinds"] == ["status"]
        only_details = await v1.post(
            "/v1/subscriptions", json={"url": receiver.url, "kinds": ["details"]}
        )
        assert only_details.json()["kinds"] == ["details"]

        await put_registration(sessionmaker, "reg-catalog")  # learnt: a status change
        await put_registration(sessionmaker, "reg-catalog", "IN_PROGRESS")
        await number_and_publish(sessionmaker, None)
        for created in (made, only_details):
            await send_all(settings, sessionmaker, created.json()["id"])
        assert len(receiver.got) == 2, "a `details` subscription got status changes"
        changed = jsonschema_rs.validator_for(catalog["registration.changed"]["schema"])
        for _headers, body in receiver.got:
            message = json.loads(body)
            assert message["type"] == "registration.changed"
            changed.validate(message["data"])  # raises when the schema does not describe it
        ping = jsonschema_rs.validator_for(catalog["ping"]["schema"])
        tested = await v1.post(f"/v1/subscriptions/{made.json()['id']}/test")
        assert tested.json()["delivered"] is True
        ping.validate(json.loads(receiver.got[-1][1])["data"])

        # The filter changes like the others; null means every kind.
        path = f"/v1/subscriptions/{only_details.json()['id']}"
        patched = await v1.patch(path, json={"kinds": None})
        assert patched.status_code == 200 and patched.json()["kinds"] is None
        bad = await v1.patch(path, json={"kinds": ["a,b"]})
        assert bad.status_code == 422
