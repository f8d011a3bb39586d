"""Submitting, updating and deleting registrations through the API (issue 27), with the simulator
as Sinch over HTTP and the API served on loopback over the real database and Redis.

What a user relies on: a submission exists here from Sinch's answer on (history source
`submitted`, on the change feed, audited), with this service's callback URL at Sinch; a retried
POST with the same `Idempotency-Key` never submits twice; Sinch's refusals come back with Sinch's
own words, its outages as 502/504; a token limited to projects cannot touch another project's.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import idempotency
from app.core.db import utcnow
from app.core.models import IDEMPOTENCY_KEYS, PROJECTS
from app.core.settings import Settings
from devtools.simulator import SimulatorControl, SimulatorServer
from tests.api.conftest import AUTH, api_settings, assert_problem, refresh_catalog
from tests.api.test_catalog import gb_request, sinch_request
from tests.support import processes
from tests.support.projects import settings_project
from tests.support.tokens import bearer, make_token
from tests.worker.test_cli import cli_env

PUBLIC_BASE_URL = "https://registrations.example.com"
WAIT = 20.0  # seconds: a bound on every wait here; a pass never comes near it


def new_registration(
    sender_id: str = "ACME", *, company: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A request as POST /v1/registrations takes it: Sinch's create body (docs/api.md), meeting
    the simulator's GB single-sender policy (`company`: other company details)."""
    return sinch_request(
        [{"senderId": sender_id, "useCase": "OTP"}],
        company=company,
        registrationType="ALPHANUMERIC_SENDER_ID",
        tags=["#billing"],
        notificationContacts=[{"email": "ops@example.com"}],
        **extra,
    )


def check_layout_registration(sender_id: str = "ACME", **extra: Any) -> dict[str, Any]:
    """The same request in the check's layout (`companyDetails`, `contactPerson`, `senderIds` at
    the top level), which the service lays out as Sinch's."""
    return gb_request(
        registrationType="ALPHANUMERIC_SENDER_ID",
        senderIds=[{"senderId": sender_id, "useCase": "OTP"}],
        tags=["#billing"],
        notificationContacts=[{"email": "ops@example.com"}],
        **extra,
    )


@pytest.fixture(autouse=True)
async def catalog(
    sim_server: SimulatorServer, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> str:
    """The project's catalog as the worker keeps it: every create and update is checked
    against it. Answers the project's id."""
    return await refresh_catalog(settings, sessionmaker)


def submitting_settings(
    sim_server: SimulatorServer, database_url: str, redis_url: str, **overrides: Any
) -> Settings:
    """The API's settings for writes: PUBLIC_BASE_URL set, Sinch's timeout short (3 s)."""
    return api_settings(
        sim_server,
        database_url,
        redis_url,
        public_base_url=PUBLIC_BASE_URL,
        sinch_timeout_seconds=3.0,
        **overrides,
    )


@pytest.fixture
def settings(sim_server: SimulatorServer, database_url: str, redis_url: str) -> Settings:
    return submitting_settings(
        sim_server, database_url, redis_url, subscription_allowed_hosts=["127.0.0.1"]
    )


async def feed_until(v1: httpx.AsyncClient, registration_id: str) -> list[dict[str, Any]]:
    """The change feed's items about `registration_id`, once there is one (bounded long-poll)."""
    cursor: str | None = None
    found: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not found and loop.time() < deadline:
        params: dict[str, Any] = {"wait": 5}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await v1.get("/v1/changes", params=params)).json()
        found += [i for i in page["items"] if i["registrationId"] == registration_id]
        cursor = page["nextCursor"]
    return found


async def test_a_submission_is_kept_from_sinchs_answer_with_the_service_callback_url(
    v1: httpx.AsyncClient, sim: SimulatorControl, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    subscription = await v1.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/hooks"})
    assert subscription.status_code == 201, subscription.text
    body = new_registration()
    # Sinch's layout as the caller has it: the contact person in an object of its own.
    [details] = body["requestDetails"]
    company, contact = details["additionalDetails"][0].values()
    details["additionalDetails"] = [{"contactPerson": contact}, {"companyDetails": company}]

    response = await v1.post("/v1/registrations", json=body)

    assert response.status_code == 201, response.text
    answer = response.json()
    registration_id = answer["id"]
    assert answer["status"] == "IN_QUEUE"
    assert answer["senderIds"] == ["ACME"]
    assert answer["tags"] == ["#billing"]
    # At Sinch: this service's callback URL for the project, the caller's contacts and tags.
    async with sessionmaker() as session:
        project = await settings_project(session)
    truth = await sim.registration(registration_id)
    assert truth["callbackUrl"] == f"{PUBLIC_BASE_URL}/callbacks/sinch/{project}/registrations"
    assert {name: truth[name] for name in body} == body  # the body as sent
    # Here: the local copy, its history (source `submitted`), the feed and the audit trail.
    assert (await v1.get(f"/v1/registrations/{registration_id}")).json()["status"] == "IN_QUEUE"
    history = (await v1.get(f"/v1/registrations/{registration_id}/history")).json()["items"]
    assert [(h["fromStatus"], h["toStatus"], h["source"]) for h in history] == [
        (None, "IN_QUEUE", "submitted")
    ]
    changes = await feed_until(v1, registration_id)
    assert [(c["kind"], c["toStatus"], c["source"]) for c in changes] == [
        ("status", "IN_QUEUE", "submitted")
    ]
    # The subscription's delivery was written as the change was numbered (the outbox).
    deliveries = await v1.get(f"/v1/subscriptions/{subscription.json()['id']}/deliveries")
    assert [d["seq"] for d in deliveries.json()["items"]] == [changes[0]["seq"]]
    entries = (await v1.get("/v1/audit", params={"action": "registration.submit"})).json()
    assert [e["target"] for e in entries["items"]] == [registration_id]


async def test_the_same_idempotency_key_and_body_answer_the_first_answer_without_a_second_submit(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    body = new_registration()
    headers = {"Idempotency-Key": "submit-1"}

    first = await v1.post("/v1/registrations", json=body, headers=headers)
    again = await v1.post("/v1/registrations", json=body, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await sim.stats())["createRegistration"] == 1
    # Another body under the same key is refused, and submits nothing.
    other = await v1.post("/v1/registrations", json=new_registration("OTHER"), headers=headers)
    assert_problem(other, 422)
    assert (await sim.stats())["createRegistration"] == 1
    # Keys are the caller's: another token's same key is another request.
    assert len(await sim.registrations()) == 1


async def test_a_key_whose_first_request_is_still_running_is_409(
    v1: httpx.AsyncClient, sim: SimulatorControl, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    body = new_registration()
    headers = {"Idempotency-Key": "slow-1"}
    await sim.inject_fault("hang", delay_seconds=1.5, paths="api")  # within the 3 s timeout
    first = asyncio.create_task(v1.post("/v1/registrations", json=body, headers=headers))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    claimed = 0
    while not claimed and loop.time() < deadline and not first.done():
        async with sessionmaker() as session:
            claimed = await session.scalar(select(func.count()).select_from(IDEMPOTENCY_KEYS))
        await asyncio.sleep(0.01)
    assert claimed, "the first request never claimed its key"

    second = await v1.post("/v1/registrations", json=body, headers=headers)

    assert_problem(second, 409)
    assert (await first).status_code == 201
    assert (await sim.stats())["createRegistration"] == 1


async def test_a_key_expires_after_24_hours_and_is_pruned(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """With an injected clock: the kept answer holds for 24 hours, then the key is free."""
    start = utcnow()
    fingerprint = idempotency.fingerprint("POST", "/v1/registrations", b"{}")
    held = await idempotency.claim(
        sessionmaker, owner="env:1", key="k", fingerprint=fingerprint, now=start
    )
    assert isinstance(held, idempotency.Claim)
    await idempotency.finish(sessionmaker, held, status=201, body={"id": "r"}, now=start)

    day = idempotency.IDEMPOTENCY_TTL
    before = await idempotency.claim(
        sessionmaker,
        owner="env:1",
        key="k",
        fingerprint=fingerprint,
        now=start + day - timedelta(seconds=1),
    )
    assert before == idempotency.Replay(201, {"id": "r"})
    assert await idempotency.prune(sessionmaker, now=start + day - timedelta(seconds=1)) == 0

    assert await idempotency.prune(sessionmaker, now=start + day) == 1
    # Expired and not yet pruned, or pruned: either way the key is free for a new request.
    after = await idempotency.claim(
        sessionmaker, owner="env:1", key="k", fingerprint="another", now=start + day
    )
    assert after == idempotency.Claim("env:1", "k")
    taken_over = await idempotency.claim(
        sessionmaker, owner="env:1", key="k", fingerprint="third", now=start + 2 * day
    )
    assert taken_over == idempotency.Claim("env:1", "k")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        # What the policy check does not look at, and Sinch refuses.
        ({"tags": "#billing"}, "tags"),
        ({"marketCode": "ZZ"}, "marketCode"),
    ],
)
async def test_sinchs_refusal_is_422_with_sinchs_details(
    v1: httpx.AsyncClient, sim: SimulatorControl, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**new_registration(), **change}.items() if v is not None}

    response = await v1.post("/v1/registrations", json=body, headers={"Idempotency-Key": "refused"})

    problem = assert_problem(response, 422)
    sinch = problem["sinch"]
    assert sinch["status"] == "INVALID_ARGUMENT"
    [violations] = [d["fieldViolations"] for d in sinch["details"]]
    assert field in [v["field"] for v in violations]
    assert await sim.registrations() == []
    # The refusal is the key's answer: the same request answers it again, Sinch not asked twice.
    again = await v1.post("/v1/registrations", json=body, headers={"Idempotency-Key": "refused"})
    assert again.json() == problem
    assert (await sim.stats())["createRegistration"] == 1


async def test_sinch_unavailable_is_502_and_a_post_is_not_retried(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    await sim.inject_fault("status", status=503, count=1)

    response = await v1.post("/v1/registrations", json=new_registration())

    assert_problem(response, 502)
    assert (await sim.stats())["createRegistration"] == 1
    assert (await v1.get("/v1/registrations")).json()["items"] == []


async def test_sinch_silent_is_504(v1: httpx.AsyncClient, sim: SimulatorControl) -> None:
    # SINCH_TIMEOUT_SECONDS is 3 here: a create that hangs longer gets no answer in time.
    await sim.inject_fault("hang", delay_seconds=6.0, count=1)

    response = await v1.post("/v1/registrations", json=new_registration())

    assert_problem(response, 504)
    assert (await sim.stats())["createRegistration"] == 1


async def test_submitting_without_public_base_url_is_refused(
    sim_server: SimulatorServer, database_url: str, redis_url: str, sim: SimulatorControl
) -> None:
    from app.main import create_app
    from tests.support.servers import serve

    settings = api_settings(sim_server, database_url, redis_url)
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=30) as client,
    ):
        response = await client.post("/v1/registrations", json=new_registration())
    problem = assert_problem(response, 503)
    assert "PUBLIC_BASE_URL" in problem["detail"]
    assert (await sim.stats()).get("createRegistration", 0) == 0


async def test_callback_url_is_the_services_to_set(v1: httpx.AsyncClient) -> None:
    response = await v1.post(
        "/v1/registrations", json=new_registration(callbackUrl="https://elsewhere.example")
    )
    assert "callbackUrl" in assert_problem(response, 422)["detail"]


async def test_update_answers_pending_and_delete_keeps_it_as_deleted(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    registration_id = (await v1.post("/v1/registrations", json=new_registration())).json()["id"]
    await sim.transition(registration_id, "PENDING", comment="Describe the use case")
    assert (await v1.post(f"/v1/registrations/{registration_id}/refresh")).json()[
        "status"
    ] == "PENDING"
    changed = new_registration()
    changed["requestDetails"][0]["senderIdDetails"] = [
        {"senderId": "ACME", "useCase": "TRANSACTIONAL"}
    ]
    changed["tags"] = ["#billing", "#fixed"]

    updated = await v1.put(f"/v1/registrations/{registration_id}", json=changed)

    assert updated.status_code == 200, updated.text
    assert updated.json()["status"] == "IN_QUEUE"
    assert updated.json()["tags"] == ["#billing", "#fixed"]
    truth = await sim.registration(registration_id)
    assert truth["requestDetails"] == changed["requestDetails"]
    assert truth["callbackUrl"].startswith(PUBLIC_BASE_URL)

    deleted = await v1.delete(f"/v1/registrations/{registration_id}")

    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["status"] == "DELETED"
    async with httpx.AsyncClient(base_url=sim.base_url) as raw:
        assert (await raw.get(f"/_sim/registrations/{registration_id}")).status_code == 404
    history = (await v1.get(f"/v1/registrations/{registration_id}/history")).json()["items"]
    assert [(h["toStatus"], h["source"]) for h in history] == [
        ("IN_QUEUE", "submitted"),
        ("PENDING", "refetch"),
        ("IN_QUEUE", "submitted"),
        ("DELETED", "submitted"),
    ]
    audit = (await v1.get("/v1/audit")).json()["items"]
    assert [(e["action"], e["target"]) for e in audit if e["action"] != "registration.refresh"] == [
        ("registration.delete", registration_id),
        ("registration.update", registration_id),
        ("registration.submit", registration_id),
    ]


async def test_an_update_sinch_refuses_is_422_and_changes_nothing_here(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    registration_id = (await v1.post("/v1/registrations", json=new_registration())).json()["id"]
    await sim.transition(registration_id, "APPROVED")

    response = await v1.put(f"/v1/registrations/{registration_id}", json=new_registration())

    assert assert_problem(response, 422)["sinch"]["status"] == "FAILED_PRECONDITION"
    local = (await v1.get(f"/v1/registrations/{registration_id}")).json()
    assert local["status"] == "IN_QUEUE"  # no callback delivered yet: nothing learnt


async def test_a_token_limited_to_another_project_cannot_write_this_ones(
    v1: httpx.AsyncClient,
    settings: Settings,
    sim: SimulatorControl,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    registration_id = (await v1.post("/v1/registrations", json=new_registration())).json()["id"]
    async with sessionmaker.begin() as session:
        now = utcnow()
        await session.execute(
            insert(PROJECTS).values(
                id="proj-b", name="Brand B", key_id="key-b", created_at=now, updated_at=now
            )
        )
        project = await settings_project(session)
    token = await make_token(settings, "brand-b-writer", "write", projects=["proj-b"])
    reader = await make_token(settings, "reader", "read")
    headers = bearer(token)

    put = await v1.put(
        f"/v1/registrations/{registration_id}", json=new_registration(), headers=headers
    )
    delete = await v1.delete(f"/v1/registrations/{registration_id}", headers=headers)
    post = await v1.post(
        "/v1/registrations", json=new_registration(projectId=project), headers=headers
    )

    assert_problem(put, 404)
    assert_problem(delete, 404)
    assert_problem(post, 404)
    stats = await sim.stats()
    assert (stats.get("updateRegistration", 0), stats.get("deleteRegistration", 0)) == (0, 0)
    assert stats["createRegistration"] == 1
    # A read token may not write at all.
    refused = await v1.post("/v1/registrations", json=new_registration(), headers=bearer(reader))
    assert_problem(refused, 403)


async def test_the_cli_submits_updates_and_deletes(
    settings: Settings, sim: SimulatorControl, tmp_path: Path, v1: httpx.AsyncClient
) -> None:
    """`python -m app registration ...` as a real process: the same service functions."""
    env = {**cli_env(settings), "PUBLIC_BASE_URL": PUBLIC_BASE_URL}

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(processes.run_cli, env, *args, cwd=tmp_path)

    good = tmp_path / "registration.json"
    good.write_text(json.dumps(new_registration("CLIACME")))
    bad = tmp_path / "refused.json"
    bad.write_text(json.dumps(new_registration(marketCode="ZZ")))
    unfit = tmp_path / "unfit.json"
    unfit.write_text(json.dumps(new_registration("A")))  # too short for the policy
    unfit_checks = tmp_path / "unfit-checks-layout.json"
    unfit_checks.write_text(json.dumps(check_layout_registration("A")))

    submitted = await cli("registration", "submit", str(good))

    assert submitted.returncode == 0, submitted.stderr
    registration_id = json.loads(submitted.stdout)["id"]
    local = (await v1.get(f"/v1/registrations/{registration_id}")).json()
    assert (local["status"], local["senderIds"]) == ("IN_QUEUE", ["CLIACME"])
    assert [(c["toStatus"], c["source"]) for c in await feed_until(v1, registration_id)] == [
        ("IN_QUEUE", "submitted")
    ]
    audit = (await v1.get("/v1/audit", params={"action": "registration.submit"})).json()
    assert [(e["actor"][:4], e["target"]) for e in audit["items"]] == [("cli:", registration_id)]

    refused = await cli("registration", "submit", str(bad))
    assert refused.returncode == 1
    assert "marketCode" in refused.stderr and "INVALID_ARGUMENT" in refused.stderr
    # The policy's refusal names each field, with Sinch's words; nothing reaches Sinch.
    creates = (await sim.stats())["createRegistration"]
    unfitting = await cli("registration", "submit", str(unfit))
    assert unfitting.returncode == 1
    assert (
        "$.requestDetails[0].senderIdDetails[0].senderId: The sender ID needs at least 3 "
        "characters" in unfitting.stderr
    )
    assert (await sim.stats())["createRegistration"] == creates

    await sim.transition(registration_id, "PENDING")
    not_updated = await cli("registration", "update", registration_id, str(unfit_checks))
    assert not_updated.returncode == 1
    assert "$.senderIds[0].senderId: The sender ID needs" in not_updated.stderr
    assert (await sim.stats()).get("updateRegistration", 0) == 0
    updated = await cli("registration", "update", registration_id, str(good))
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["status"] == "IN_QUEUE"

    deleted = await cli("registration", "delete", registration_id)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["status"] == "DELETED"
    assert (await v1.get(f"/v1/registrations/{registration_id}")).json()["status"] == "DELETED"


async def test_a_create_the_policy_refuses_sends_nothing_and_the_fixed_one_reuses_the_key(
    v1: httpx.AsyncClient, sim: SimulatorControl, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """In the check's layout (the console's): checked at its own paths, laid out as Sinch's."""
    headers = {"Idempotency-Key": "fix-me"}
    unfit = check_layout_registration("A")  # shorter than the policy's 3 characters
    unfit["contactPerson"] = {k: v for k, v in unfit["contactPerson"].items() if k != "email"}

    refused = await v1.post("/v1/registrations", json=unfit, headers=headers)

    problem = assert_problem(refused, 422)
    assert [(e["path"], e["rule"], e["fromSinch"]) for e in problem["errors"]] == [
        ("$.contactPerson.email", "required", False),
        ("$.senderIds[0].senderId", "minLength", True),
    ]
    assert problem["errors"][1]["message"] == "The sender ID needs at least 3 characters"
    assert (await sim.stats()).get("createRegistration", 0) == 0
    async with sessionmaker() as session:  # the key was not claimed
        assert await session.scalar(select(func.count()).select_from(IDEMPOTENCY_KEYS)) == 0

    fixed = await v1.post("/v1/registrations", json=check_layout_registration(), headers=headers)

    assert fixed.status_code == 201, fixed.text
    assert fixed.headers.get("Idempotent-Replayed") is None
    assert (await sim.stats())["createRegistration"] == 1
    # Sinch got the request laid out as its create body (app/catalog/layout.py).
    truth = await sim.registration(fixed.json()["id"])
    assert truth["requestDetails"] == new_registration()["requestDetails"]


async def test_a_disabled_policy_is_refused_with_sinchs_disclaimer(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    body = new_registration(
        policyId="sim-policy-fr-alphanumeric",
        company={"companyName": "Acme SA", "siren": "123456789"},
    )

    response = await v1.post("/v1/registrations", json=body)

    [error] = assert_problem(response, 422)["errors"]
    assert (error["path"], error["rule"], error["fromSinch"]) == (
        "$.policyId",
        "policyStatus",
        True,
    )
    assert error["message"].startswith("Registrations of alphanumeric sender IDs in France")
    assert (await sim.stats()).get("createRegistration", 0) == 0


async def test_a_create_in_sinchs_layout_the_policy_refuses_is_422_at_its_paths(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    body = new_registration("A")  # shorter than the policy's 3 characters
    [details] = body["requestDetails"]
    company, contact = details["additionalDetails"][0].values()
    details["additionalDetails"] = [
        {"companyDetails": company},
        {"contactPerson": {k: v for k, v in contact.items() if k != "email"}},
    ]

    refused = await v1.post("/v1/registrations", json=body)

    problem = assert_problem(refused, 422)
    assert [(e["field"], e["rule"], e["fromSinch"]) for e in problem["errors"]] == [
        ("$.requestDetails[0].additionalDetails[1].contactPerson.email", "required", False),
        ("$.requestDetails[0].senderIdDetails[0].senderId", "minLength", True),
    ]
    assert [e["path"] for e in problem["errors"]] == [e["field"] for e in problem["errors"]]
    assert (await sim.stats()).get("createRegistration", 0) == 0


async def test_a_body_mixing_both_layouts_is_one_entry_and_nothing_is_sent(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    body = new_registration(senderIds=[{"senderId": "ACME", "useCase": "OTP"}])

    response = await v1.post("/v1/registrations", json=body)

    [entry] = assert_problem(response, 422)["errors"]
    assert (entry["field"], entry["rule"]) == ("$.requestDetails", "layout")
    assert (await sim.stats()).get("createRegistration", 0) == 0


async def test_an_update_the_policy_refuses_sends_nothing_then_the_fixed_one_is_sent(
    v1: httpx.AsyncClient, sim: SimulatorControl
) -> None:
    registration_id = (await v1.post("/v1/registrations", json=new_registration())).json()["id"]
    await sim.transition(registration_id, "PENDING", comment="Provide the company's website")
    # Sinch's update body, without policyId: the registration's policy is the one checked.
    company = {"companyName": "Acme Ltd", "companyNumber": "AB123456"}
    unfit = {
        k: v
        for k, v in new_registration(company={**company, "website": "http://acme.example"}).items()
        if k != "policyId"
    }

    refused = await v1.put(f"/v1/registrations/{registration_id}", json=unfit)

    [error] = assert_problem(refused, 422)["errors"]
    where = "$.requestDetails[0].additionalDetails[0].companyDetails.website"
    assert error == {
        "field": where,
        "path": where,
        "rule": "pattern",
        "message": "The website must start with https://",
        "fromSinch": True,
    }
    assert (await sim.stats()).get("updateRegistration", 0) == 0
    assert (await sim.registration(registration_id))["status"] == "PENDING"

    fixed_company = {**company, "website": "https://acme.example"}
    fixed_body = {
        k: v for k, v in new_registration(company=fixed_company).items() if k != "policyId"
    }
    fixed = await v1.put(f"/v1/registrations/{registration_id}", json=fixed_body)

    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["status"] == "IN_QUEUE"
    assert (await sim.stats())["updateRegistration"] == 1
    truth = await sim.registration(registration_id)
    assert truth["requestDetails"] == fixed_body["requestDetails"]  # as sent
