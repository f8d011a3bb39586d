"""The simulator's Sinch-like routes and control API, over real HTTP."""

from __future__ import annotations

import itertools
import random
import socket
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.simulator import SimulatorControl, SimulatorServer
from devtools.simulator.state import SimulatorState, format_time, list_filters


async def test_wrong_credentials_get_no_token(sim_server: SimulatorServer) -> None:
    async with httpx.AsyncClient() as http:
        wrong = await http.post(
            sim_server.auth_url,
            data={"grant_type": "client_credentials"},
            auth=(sim_server.key_id, "nope"),
        )
        bad_grant = await http.post(
            sim_server.auth_url,
            data={"grant_type": "password"},
            auth=(sim_server.key_id, sim_server.key_secret),
        )
    assert wrong.status_code == 401
    assert bad_grant.status_code == 400


async def test_api_needs_a_valid_token(
    sim_server: SimulatorServer, sim: SimulatorControl, api: httpx.AsyncClient
) -> None:
    created = await sim.create_registration()
    path = f"/registrations/{created['id']}"

    assert (await api.get(path)).status_code == 200
    assert (await api.get(path, headers={"Authorization": "Bearer forged"})).status_code == 401
    assert (await api.get(path, headers={"Authorization": ""})).status_code == 401
    await sim.revoke_tokens()
    assert (await api.get(path)).status_code == 401
    assert (await sim.stats())["unauthorized"] == 3


async def test_tokens_expire() -> None:
    async with (
        SimulatorServer(token_ttl_seconds=0) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        token = (
            await http.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(server.key_id, server.key_secret),
            )
        ).json()["access_token"]
        answer = await http.get(
            f"/v1/projects/{server.project_id}/callback-configuration",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 401


async def test_registration_documents_look_like_sinchs(
    sim: SimulatorControl, api: httpx.AsyncClient
) -> None:
    created = await sim.create_registration(at="2026-03-01T08:00:00", tags=["#demo"])

    answer = await api.get(f"/registrations/{created['id']}")

    document = answer.json()
    assert document == created
    assert document["status"] == "IN_QUEUE"
    assert document["registrationType"] == "ALPHANUMERIC_SENDER_ID"
    assert document["createTime"] == document["updateTime"] == "2026-03-01T08:00:00"
    assert document["tags"] == ["#demo"]
    assert document["logs"] == [
        {
            "createTime": "2026-03-01T08:00:00",
            "message": "Registration submitted",
            "registrationState": "IN_QUEUE",
        }
    ]
    assert len(document["id"]) == 36
    assert (await api.get("/registrations/missing")).status_code == 404


async def test_unknown_project_is_not_found(
    sim_server: SimulatorServer, sim: SimulatorControl, api: httpx.AsyncClient
) -> None:
    other = f"{sim_server.base_url}/v1/projects/someone-else/callback-configuration"

    assert (await api.get(other)).status_code == 404


async def test_transitions_get_distinct_whole_second_times(sim: SimulatorControl) -> None:
    created = await sim.create_registration()
    for status in ("IN_PROGRESS", "PENDING", "IN_PROGRESS", "APPROVED"):
        await sim.transition(created["id"], status)
    explicit = await sim.transition(created["id"], "ON_HOLD", at="2020-01-01T00:00:00Z")

    events = await sim.events(created["id"])

    times = [datetime.fromisoformat(e["createTime"]) for e in events[:-1]]
    assert all(b - a >= timedelta(seconds=1) for a, b in itertools.pairwise(times))
    assert explicit["createTime"] == "2020-01-01T00:00:00"
    truth = await sim.registration(created["id"])
    assert truth["status"] == "ON_HOLD"
    # Only the creation and the moves into PENDING and ON_HOLD (a canned reason each) are logged.
    assert [log["registrationState"] for log in truth["logs"]] == ["IN_QUEUE", "PENDING", "ON_HOLD"]
    assert [e["status"] for e in events if "comments" in e] == ["PENDING", "ON_HOLD"]


async def test_control_errors(sim: SimulatorControl) -> None:
    with pytest.raises(httpx.HTTPStatusError) as missing:
        await sim.transition("missing", "APPROVED")
    created = await sim.create_registration()
    with pytest.raises(httpx.HTTPStatusError) as twice:
        await sim.create_registration(registration_id=created["id"])
    with pytest.raises(httpx.HTTPStatusError) as bad_time:
        await sim.transition(created["id"], "APPROVED", at="yesterday")

    assert missing.value.response.status_code == 404
    assert twice.value.response.status_code == 400
    assert bad_time.value.response.status_code == 400


async def test_list_pages_with_a_cursor(sim: SimulatorControl, api: httpx.AsyncClient) -> None:
    created = [await sim.create_registration() for _ in range(5)]
    await sim.create_registration(registration_type="SHORT_CODE")

    first = (await api.get("/registrations", params={"pageSize": 2})).json()
    second = (
        await api.get("/registrations", params={"pageSize": 2, "pageToken": first["nextPageToken"]})
    ).json()
    third = (
        await api.get(
            "/registrations", params={"pageSize": 2, "pageToken": second["nextPageToken"]}
        )
    ).json()

    assert first["totalSize"] == 5
    pages = [first, second, third]
    assert [len(p["registrations"]) for p in pages] == [2, 2, 1]
    assert [d["id"] for p in pages for d in p["registrations"]] == [c["id"] for c in created]
    assert third["nextPageToken"] == ""
    bad = await api.get("/registrations", params={"pageToken": "not-a-token"})
    assert bad.status_code == 400


async def test_list_filters(sim: SimulatorControl, api: httpx.AsyncClient) -> None:
    old = await sim.create_registration(at="2026-01-01T23:59:59", tags=["#a", "#b"])
    new = await sim.create_registration(at="2026-01-02T00:00:00", status="APPROVED")

    async def ids(**params: Any) -> list[str]:
        answer = await api.get("/registrations", params=params)
        assert answer.status_code == 200, answer.text
        return [d["id"] for d in answer.json()["registrations"]]

    assert await ids(updateDateFrom="2026-01-02") == [new["id"]]
    assert await ids(updateDateFrom="2026-01-01T23:59:59") == [old["id"], new["id"]]
    assert await ids(updateDateFrom="2026-01-01T23:59:59.999Z") == [old["id"], new["id"]]
    assert await ids(updateDateFrom="2026-01-02T01:00:00+01:00") == [new["id"]]
    assert await ids(updateDateTo="2026-01-01") == [old["id"]]
    assert await ids(updateDateTo="2026-01-01T23:59:59") == [old["id"]]
    assert await ids(registrationState="APPROVED") == [new["id"]]
    assert await ids(tags=["#a", "#b"]) == [old["id"]]
    assert await ids(registrationType="LONG_NUMBER") == []
    assert (await api.get("/registrations", params={"updateDateFrom": "soon"})).status_code == 400


async def test_faults(sim: SimulatorControl, api: httpx.AsyncClient) -> None:
    await sim.inject_fault("status", status=429, retry_after=2, count=2)
    await sim.inject_fault("status", status=500, count=1, paths="token")

    first = await api.get("/callback-configuration")
    second = await api.get("/callback-configuration")
    third = await api.get("/callback-configuration")

    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert first.headers["Retry-After"] == "2"
    await sim.clear_faults()
    stats = await sim.stats()
    assert stats["callbackConfiguration"] == 3
    assert stats["faultsInjected"] == 2


async def test_reset_forgets_everything(sim: SimulatorControl) -> None:
    await sim.create_registration()
    await sim.inject_fault("status", count=3)

    await sim.reset()

    assert await sim.registrations() == []
    assert await sim.all_events() == []
    assert all(v == 0 for v in (await sim.stats()).values())


def test_server_runs_with_a_plain_with_and_stops() -> None:
    with SimulatorServer() as server:
        port = server.port
        assert httpx.get(f"{server.base_url}/_sim/health").json()["ok"] is True
        assert server.env()["SINCH_AUTH_URL"] == f"{server.base_url}/oauth2/token"
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass


@settings(max_examples=60, deadline=None)
@given(
    types=st.lists(st.sampled_from(["ALPHANUMERIC_SENDER_ID", "LONG_NUMBER"]), max_size=40),
    page_size=st.integers(1, 12),
    seed=st.integers(),
)
def test_a_cursor_walk_sees_each_match_once(types: list[str], page_size: int, seed: int) -> None:
    rng = random.Random(seed)
    state = SimulatorState(project_id="p", key_id="k", key_secret="s", hmac_secret="h", seed=seed)
    start = datetime(2026, 1, 1)
    for registration_type in types:
        at = format_time(start + timedelta(seconds=rng.randrange(100)))
        state.create(registration_type=registration_type, at=at)
    filters = list_filters(
        registration_type="LONG_NUMBER",
        registration_state=None,
        update_date_from=format_time(start + timedelta(seconds=50)),
        update_date_to=None,
        create_date_from=None,
        create_date_to=None,
        tags=[],
    )

    seen: list[str] = []
    token: str | None = None
    while True:
        page, token, total = state.list_page(filters, page_size=page_size, page_token=token)
        assert len(page) <= page_size
        seen.extend(d["id"] for d in page)
        if not token:
            break

    expected = [
        d["id"]
        for d in state.all_documents()
        if d["registrationType"] == "LONG_NUMBER"
        and d["updateTime"] >= format_time(start + timedelta(seconds=50))
    ]
    assert seen == expected
    assert total == len(expected)
