"""The Sinch client against the simulator, over real HTTP on loopback: no mocks."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from app.settings import Settings
from app.simulator import SimulatorControl, SimulatorServer
from app.sinch import (
    SinchClient,
    SinchNotConfiguredError,
    SinchNotFoundError,
    SinchRejectedError,
    SinchRetryableError,
    create_http_client,
)
from tests.sinch.sinch_support import ClientFactory, client_for

KEY_SECRET = "key-secret-never-shown-4711"


class RecordingSleep:
    """A sleep that records each delay and sleeps for real (delays in these tests are short)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(delay)


# --- tokens ---------------------------------------------------------------------------------


async def test_one_token_request_for_50_concurrent_calls(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    registration = await sim.create_registration()
    client = make_client()

    results = await asyncio.gather(
        *(client.get_registration(registration["id"]) for _ in range(50))
    )

    assert {r.id for r in results} == {registration["id"]}
    stats = await sim.stats()
    assert stats["token"] == 1
    assert stats["getRegistration"] == 50


async def test_token_refreshed_before_it_expires(http: httpx.AsyncClient) -> None:
    async with (
        SimulatorServer(token_ttl_seconds=1) as server,
        SimulatorControl(server.base_url) as sim,
    ):
        registration = await sim.create_registration()
        client = client_for(server, http)
        await client.get_registration(registration["id"])
        await client.get_registration(registration["id"])
        assert (await sim.stats())["token"] == 1

        await asyncio.sleep(1.05)
        await client.get_registration(registration["id"])

        stats = await sim.stats()
        assert stats["token"] == 2
        assert stats["unauthorized"] == 0  # refreshed ahead of expiry, not after a refusal


async def test_token_refreshed_once_after_a_401(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    registration = await sim.create_registration()
    client = make_client()
    await client.get_registration(registration["id"])

    await sim.revoke_tokens()
    found = await client.get_registration(registration["id"])

    assert found.id == registration["id"]
    stats = await sim.stats()
    assert stats["token"] == 2
    assert stats["unauthorized"] == 1
    assert stats["getRegistration"] == 3


async def test_many_callers_refused_at_once_cause_one_refresh(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    registration = await sim.create_registration()
    client = make_client()
    await client.get_registration(registration["id"])
    await sim.revoke_tokens()

    await asyncio.gather(*(client.get_registration(registration["id"]) for _ in range(20)))

    assert (await sim.stats())["token"] == 2


async def test_a_second_401_is_rejected(sim: SimulatorControl, make_client: ClientFactory) -> None:
    registration = await sim.create_registration()
    await sim.inject_fault("status", status=401, count=2)

    with pytest.raises(SinchRejectedError) as caught:
        await make_client().get_registration(registration["id"])

    assert caught.value.status_code == 401
    stats = await sim.stats()
    assert stats["token"] == 2
    assert stats["getRegistration"] == 2


async def test_wrong_credentials_are_rejected_without_retry(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    wrong = "wrong-secret-that-must-not-leak"
    client = make_client(key_secret=SecretStr(wrong))

    with pytest.raises(SinchRejectedError) as caught:
        await client.get_registration("anything")

    assert caught.value.status_code == 401
    assert wrong not in str(caught.value)
    assert wrong not in repr(client)
    assert (await sim.stats())["token"] == 1


async def test_token_endpoint_failures_are_retried(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    registration = await sim.create_registration()
    await sim.inject_fault("status", status=503, count=2, paths="token")

    found = await make_client().get_registration(registration["id"])

    assert found.id == registration["id"]
    stats = await sim.stats()
    assert stats["token"] == 3
    assert stats["getRegistration"] == 1


# --- listing ----------------------------------------------------------------------------------


async def test_list_walks_every_page_once(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    created = await asyncio.gather(*(sim.create_registration() for _ in range(250)))
    await asyncio.gather(
        *(sim.create_registration(registration_type="LONG_NUMBER") for _ in range(10))
    )

    seen = [r.id async for r in make_client().list_registrations(page_size=7)]

    assert len(seen) == 250
    assert set(seen) == {r["id"] for r in created}
    assert (await sim.stats())["listRegistrations"] == math.ceil(250 / 7)


async def test_list_asks_per_registration_type(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    long_number = await sim.create_registration(registration_type="LONG_NUMBER")
    await sim.create_registration()

    seen = [r async for r in make_client().list_registrations(registration_type="LONG_NUMBER")]

    assert [r.id for r in seen] == [long_number["id"]]
    assert seen[0].registration_type == "LONG_NUMBER"


async def test_list_filters_by_update_date_inclusively(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    base = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
    early = await sim.create_registration(at=base)
    edge = await sim.create_registration(at=base + timedelta(seconds=5))
    late = await sim.create_registration(at=base + timedelta(seconds=10))
    client = make_client()

    async def ids_from(when: datetime) -> set[str]:
        return {r.id async for r in client.list_registrations(update_date_from=when)}

    assert await ids_from(base + timedelta(seconds=5)) == {edge["id"], late["id"]}
    # A fraction of a second is floored: Sinch keeps whole seconds, and a watermark must not skip.
    assert await ids_from(base + timedelta(seconds=5, milliseconds=900)) == {edge["id"], late["id"]}
    # A naive datetime is UTC; an aware one in another zone is converted.
    assert await ids_from(datetime(2026, 1, 1, 10, 0, 6)) == {late["id"]}
    cet = base.astimezone(datetime.now().astimezone().tzinfo)
    assert await ids_from(cet) == {early["id"], edge["id"], late["id"]}

    await sim.transition(early["id"], "IN_PROGRESS", at=base + timedelta(seconds=11))
    assert await ids_from(base + timedelta(seconds=11)) == {early["id"]}


async def test_list_filters_by_state(sim: SimulatorControl, make_client: ClientFactory) -> None:
    approved = await sim.create_registration(lifecycle=["IN_PROGRESS", "APPROVED"])
    await sim.create_registration()

    seen = [r.id async for r in make_client().list_registrations(registration_state="APPROVED")]

    assert seen == [approved["id"]]


# --- retries and errors -----------------------------------------------------------------------


async def test_503_is_retried(sim: SimulatorControl, make_client: ClientFactory) -> None:
    registration = await sim.create_registration()
    await sim.inject_fault("status", status=503, count=2)
    sleep = RecordingSleep()

    found = await make_client(sleep=sleep).get_registration(registration["id"])

    assert found.id == registration["id"]
    assert (await sim.stats())["getRegistration"] == 3
    assert len(sleep.delays) == 2
    assert all(0 < d <= 0.05 for d in sleep.delays)


async def test_retries_stop_after_max_attempts(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    await sim.inject_fault("status", status=500, count=10)

    with pytest.raises(SinchRetryableError) as caught:
        await make_client(max_attempts=3).get_registration("whatever")

    assert caught.value.status_code == 500
    assert (await sim.stats())["getRegistration"] == 3


async def test_429_honours_retry_after(sim: SimulatorControl, make_client: ClientFactory) -> None:
    registration = await sim.create_registration()
    await sim.inject_fault("status", status=429, retry_after=0.3, count=1)
    sleep = RecordingSleep()

    started = time.monotonic()
    found = await make_client(sleep=sleep).get_registration(registration["id"])

    assert found.id == registration["id"]
    assert sleep.delays == [0.3]
    assert time.monotonic() - started >= 0.3
    assert (await sim.stats())["getRegistration"] == 2


async def test_retry_after_past_the_deadline_raises_at_once(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    await sim.inject_fault("status", status=503, retry_after=30, count=1)
    sleep = RecordingSleep()

    with pytest.raises(SinchRetryableError) as caught:
        await make_client(sleep=sleep, deadline_seconds=5).get_registration("whatever")

    assert caught.value.retry_after == 30
    assert sleep.delays == []
    assert (await sim.stats())["getRegistration"] == 1


async def test_400_is_not_retried(sim: SimulatorControl, make_client: ClientFactory) -> None:
    await sim.inject_fault("status", status=400, count=5)

    with pytest.raises(SinchRejectedError) as caught:
        await make_client().get_registration("whatever")

    assert caught.value.status_code == 400
    assert not isinstance(caught.value, SinchNotFoundError)
    assert (await sim.stats())["getRegistration"] == 1


async def test_404_has_its_own_type(sim: SimulatorControl, make_client: ClientFactory) -> None:
    with pytest.raises(SinchNotFoundError) as caught:
        await make_client().get_registration("no-such-registration")

    assert caught.value.status_code == 404
    assert (await sim.stats())["getRegistration"] == 1


async def test_read_timeouts_are_retried_then_raised(
    sim_server: SimulatorServer, sim: SimulatorControl
) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.2, connect=1.0)) as http:
        client = client_for(sim_server, http, max_attempts=2)
        await client.get_callback_configuration()  # the token first, so only the API hangs
        await sim.inject_fault("hang", delay_seconds=1.0, count=2)
        started = time.monotonic()

        with pytest.raises(SinchRetryableError) as caught:
            await client.get_callback_configuration()

    assert time.monotonic() - started < 0.9
    assert caught.value.status_code is None
    assert (await sim.stats())["callbackConfiguration"] == 3


async def test_a_slow_answer_then_a_good_one(
    sim_server: SimulatorServer, sim: SimulatorControl
) -> None:
    registration = await sim.create_registration()
    await sim.inject_fault("hang", delay_seconds=0.5, count=1)
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.2, connect=1.0)) as http:
        found = await client_for(sim_server, http).get_registration(registration["id"])

    assert found.id == registration["id"]


async def test_the_deadline_bounds_the_whole_call(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    await sim.inject_fault("hang", delay_seconds=1.0, count=1)
    started = time.monotonic()

    with pytest.raises(SinchRetryableError):
        await make_client(deadline_seconds=0.3).get_registration("whatever")

    assert time.monotonic() - started < 0.8


async def test_connection_errors_are_retryable(http: httpx.AsyncClient) -> None:
    with SimulatorServer() as server:
        client = client_for(server, http, max_attempts=2)
    # The server is gone: nothing listens on its port any more.

    with pytest.raises(SinchRetryableError) as caught:
        await client.get_registration("whatever")

    assert caught.value.status_code is None


# --- documents --------------------------------------------------------------------------------


async def test_unknown_fields_and_states_are_kept(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    created = await sim.create_registration(
        extra={"brandNewField": {"nested": [1, 2]}, "etaDate": None},
        lifecycle=["IN_PROGRESS", "SOMETHING_SINCH_ADDED"],
    )
    client = make_client()

    found = await client.get_registration(created["id"])
    listed = [r async for r in client.list_registrations()]

    truth = await sim.registration(created["id"])
    assert found.status == "SOMETHING_SINCH_ADDED"
    assert found.raw == truth
    assert found.raw["brandNewField"] == {"nested": [1, 2]}
    assert [r.raw for r in listed] == [truth]
    assert found.update_time == datetime.fromisoformat(truth["updateTime"]).replace(tzinfo=UTC)
    assert found.create_time is not None
    assert found.create_time.tzinfo is not None


async def test_callback_configuration_round_trip(
    sim_server: SimulatorServer, sim: SimulatorControl, make_client: ClientFactory
) -> None:
    client = make_client()

    before = await client.get_callback_configuration()
    stored = await client.put_callback_configuration(SecretStr("a-brand-new-hmac-secret"))
    after = await client.get_callback_configuration()

    assert before.hmac_secret.get_secret_value() == sim_server.hmac_secret
    assert before.project_id == sim_server.project_id
    assert stored.hmac_secret.get_secret_value() == "a-brand-new-hmac-secret"
    assert after.hmac_secret.get_secret_value() == "a-brand-new-hmac-secret"
    assert "a-brand-new-hmac-secret" not in repr(after)


async def test_an_unknown_project_is_not_found(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    with pytest.raises(SinchNotFoundError):
        await make_client(project_id="someone-elses").get_callback_configuration()


async def test_secrets_never_reach_messages_or_logs(
    sim_server: SimulatorServer,
    sim: SimulatorControl,
    make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(max_attempts=2)
    await client.put_callback_configuration(SecretStr("hmac-secret-to-hide"))
    errors: list[Exception] = []
    for fault_status in (503, 429, 400, 401):
        await sim.inject_fault("status", status=fault_status, count=4)
        try:
            await client.get_registration("whatever")
        except Exception as exc:
            errors.append(exc)
        await sim.clear_faults()
    await sim.revoke_tokens()
    await sim.inject_fault("status", status=401, count=2)
    with pytest.raises(SinchRejectedError) as caught:
        await client.get_registration("whatever")
    errors.append(caught.value)

    assert len(errors) == 5
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [caplog.text, repr(client)]
    for text in texts:
        assert KEY_SECRET not in text
        assert "hmac-secret-to-hide" not in text
        assert "Bearer " not in text


# --- construction -----------------------------------------------------------------------------


def _settings(**values: object) -> Settings:
    base: dict[str, object] = {
        "sinch_project_id": None,
        "sinch_key_id": None,
        "sinch_key_secret": None,
    }
    # model_validate reads no environment variable and no .env file: the test's values only.
    return Settings.model_validate(base | values)


async def test_from_settings_needs_credentials() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(SinchNotConfiguredError) as caught:
            SinchClient.from_settings(_settings(sinch_project_id="p", sinch_key_id="k"), http)
    assert "SINCH_KEY_SECRET" in str(caught.value)


async def test_from_settings_talks_to_the_configured_sinch(
    sim_server: SimulatorServer, sim: SimulatorControl
) -> None:
    settings = _settings(
        sinch_project_id=sim_server.project_id,
        sinch_key_id=sim_server.key_id,
        sinch_key_secret=sim_server.key_secret,
        sinch_api_base_url=sim_server.base_url,
        sinch_auth_url=sim_server.auth_url,
        sinch_timeout_seconds=3.0,
    )
    registration = await sim.create_registration()
    http = create_http_client(settings)
    try:
        client = SinchClient.from_settings(settings, http)
        found = await client.get_registration(registration["id"])
    finally:
        await http.aclose()

    assert found.id == registration["id"]
    assert http.timeout.read == 3.0
    assert http.timeout.connect is not None
