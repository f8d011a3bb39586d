"""The Sinch client against the simulator, over real HTTP on loopback: no mocks."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from app.core.settings import Settings
from app.sinch.client import SinchClient, create_http_client
from app.sinch.errors import (
    SinchNotConfiguredError,
    SinchNotFoundError,
    SinchRejectedError,
    SinchRetryableError,
)
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.sinch.sinch_support import ClientFactory, client_for

KEY_SECRET = "key-secret-never-shown-4711"


class FakeClock:
    """The client's clock and sleep: a sleep records its delay and moves the clock on at once."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.delays: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += delay
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is


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


async def test_token_refreshed_before_it_expires(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    # The simulator's tokens live 3600 s; the client refreshes 60 s (its margin) before that.
    registration = await sim.create_registration()
    clock = FakeClock()
    client = make_client(clock=clock, sleep=clock.sleep, token_refresh_margin_seconds=60)
    await client.get_registration(registration["id"])

    clock.advance(3539.5)
    await client.get_registration(registration["id"])
    assert (await sim.stats())["token"] == 1  # still within its life less the margin

    clock.advance(0.5)
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
    clock = FakeClock()

    found = await make_client(clock=clock, sleep=clock.sleep).get_registration(registration["id"])

    assert found.id == registration["id"]
    assert (await sim.stats())["getRegistration"] == 3
    # Jittered over the upper half of 0.01 s, then of 0.02 s (client_for's backoff).
    assert len(clock.delays) == 2
    assert 0.005 <= clock.delays[0] <= 0.01
    assert 0.01 <= clock.delays[1] <= 0.02


async def test_retries_stop_after_max_attempts(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    await sim.inject_fault("status", status=500, count=10)

    with pytest.raises(SinchRetryableError) as caught:
        await make_client(max_attempts=3).get_registration("whatever")

    assert caught.value.status_code == 500
    assert (await sim.stats())["getRegistration"] == 3


async def test_a_call_may_ask_for_one_attempt(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    # The worker's event job retries the whole job itself: its GET is tried once, whatever the
    # client's own `max_attempts`.
    await sim.inject_fault("status", status=503, count=10)
    clock = FakeClock()
    client = make_client(max_attempts=4, clock=clock, sleep=clock.sleep)

    with pytest.raises(SinchRetryableError) as caught:
        await client.get_registration("whatever", max_attempts=1)

    assert caught.value.status_code == 503
    assert clock.delays == []
    assert (await sim.stats())["getRegistration"] == 1


async def test_one_attempt_still_refreshes_the_token_after_a_401(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    registration = await sim.create_registration()
    client = make_client()
    await client.get_registration(registration["id"])
    await sim.revoke_tokens()

    found = await client.get_registration(registration["id"], max_attempts=1)

    assert found.id == registration["id"]
    stats = await sim.stats()
    assert (stats["token"], stats["unauthorized"], stats["getRegistration"]) == (2, 1, 3)


async def test_zero_attempts_is_refused(make_client: ClientFactory) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        await make_client().get_registration("whatever", max_attempts=0)


async def test_429_honours_retry_after(sim: SimulatorControl, make_client: ClientFactory) -> None:
    registration = await sim.create_registration()
    await sim.inject_fault("status", status=429, retry_after=7, count=1)
    clock = FakeClock()

    found = await make_client(clock=clock, sleep=clock.sleep).get_registration(registration["id"])

    assert found.id == registration["id"]
    assert clock.delays == [7]  # exactly what Retry-After asked, not the backoff's 0.01 s
    assert (await sim.stats())["getRegistration"] == 2


async def test_retry_after_past_the_deadline_raises_at_once(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    await sim.inject_fault("status", status=503, retry_after=30, count=1)
    clock = FakeClock()

    with pytest.raises(SinchRetryableError) as caught:
        await make_client(clock=clock, sleep=clock.sleep, deadline_seconds=5).get_registration(
            "whatever"
        )

    assert caught.value.retry_after == 30
    assert clock.delays == []
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

        # Waiting out a hang would answer 200: raising at all means each try timed out.
        with pytest.raises(SinchRetryableError, match="timed out") as caught:
            await client.get_callback_configuration()

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

    # Waiting out the hang would answer 404 (SinchNotFoundError, not retryable); the read
    # timeout (2 s, the `http` fixture's) is longer than the hang, so only the deadline can cut it.
    with pytest.raises(SinchRetryableError, match="deadline exceeded"):
        await make_client(deadline_seconds=0.3).get_registration("whatever")

    assert (await sim.stats())["getRegistration"] == 1  # no try after the deadline


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


def _sim_settings(sim_server: SimulatorServer, **overrides: object) -> Settings:
    """Settings pointing at the simulator, with its credentials."""
    return _settings(
        sinch_project_id=sim_server.project_id,
        sinch_key_id=sim_server.key_id,
        sinch_key_secret=sim_server.key_secret,
        sinch_api_base_url=sim_server.base_url,
        sinch_auth_url=sim_server.auth_url,
        **overrides,
    )


async def test_from_settings_talks_to_the_configured_sinch(
    sim_server: SimulatorServer, sim: SimulatorControl
) -> None:
    settings = _sim_settings(sim_server, sinch_timeout_seconds=3.0)
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


async def test_from_settings_tries_each_call_sinch_max_attempts_times(
    sim_server: SimulatorServer, sim: SimulatorControl
) -> None:
    settings = _sim_settings(sim_server, sinch_max_attempts=2)
    # `Retry-After: 0`: the client's backoff between tries is then no wait at all.
    await sim.inject_fault("status", status=503, retry_after=0, count=10)
    http = create_http_client(settings)
    try:
        with pytest.raises(SinchRetryableError):
            await SinchClient.from_settings(settings, http).get_registration("whatever")
    finally:
        await http.aclose()

    assert (await sim.stats())["getRegistration"] == 2


def test_sinch_max_attempts_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="sinch_max_attempts"):
        _settings(sinch_max_attempts=0)
