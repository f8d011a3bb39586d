"""The catalog through the API on loopback: markets and policies refreshed from the simulator as
Sinch, listed and paged, limited to the token's projects, and the check of a registration
request (`POST /v1/registrations?validateOnly=true`)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.catalog import repository, service
from app.core.db import utcnow
from app.core.models import PROJECTS
from app.core.settings import Settings
from app.projects.service import ensure_settings_project
from app.sinch.client import SinchClient
from devtools.simulator import SimulatorControl
from devtools.simulator.catalog import POLICY_DOCUMENTS
from tests.api.conftest import assert_problem
from tests.support.tokens import bearer, make_token

Sessions = async_sessionmaker[AsyncSession]
B = "proj-b"
GB = "sim-policy-gb-alphanumeric"


@pytest.fixture
async def refreshed(sim: SimulatorControl, settings: Settings, sessionmaker: Sessions) -> str:
    """The settings' project's catalog refreshed from the simulator, and a project B with one
    market of its own (stored as a refresh stores it); answers the settings' project id."""
    async with httpx.AsyncClient(timeout=30) as http:
        sinch = SinchClient.from_settings(settings, http)
        async with sessionmaker.begin() as session:
            await ensure_settings_project(session, settings, utcnow())
        await service.refresh(sessionmaker, sinch, now=utcnow())
    async with sessionmaker.begin() as session:
        now = utcnow()
        await session.execute(
            insert(PROJECTS).values(id=B, name="B", key_id="key-b", created_at=now, updated_at=now)
        )
        market = repository.FetchedMarket("NO", "ALPHANUMERIC_SENDER_ID", "Norway", True, [], [])
        policy = repository.FetchedPolicy("b-policy", "NO", "ALPHANUMERIC_SENDER_ID", {"id": "x"})
        await repository.store(session, B, [market], [policy], now=now)
    return settings.settings_project_id


GB_COMPANY = {"companyName": "Acme Ltd", "companyNumber": "AB123456"}
GB_CONTACT = {
    "firstName": "Ada",
    "lastName": "Lovelace",
    "email": "ada@example.com",
    "phoneNumber": "+442012345678",
}
GB_SENDERS = [{"senderId": "ACME", "useCase": "OTP"}]


def gb_request(**changes: Any) -> dict[str, Any]:
    """A request meeting the simulator's GB policy in the check's layout (docs/api.md): the
    content at the top level."""
    body: dict[str, Any] = {
        "policyId": GB,
        "companyDetails": GB_COMPANY,
        "contactPerson": GB_CONTACT,
        "senderIds": GB_SENDERS,
    }
    return copy.deepcopy(body | changes)


def sinch_request(
    senders: list[dict[str, Any]] | None = None,
    *,
    company: dict[str, Any] | None = None,
    contact: dict[str, Any] | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """A request in Sinch's layout (THE layout, docs/api.md), meeting the simulator's GB policy
    unless told otherwise: the content under `requestDetails[0]`."""
    body: dict[str, Any] = {
        "policyId": GB,
        "requestDetails": [
            {
                "senderIdDetails": GB_SENDERS if senders is None else senders,
                "additionalDetails": [
                    {
                        "companyDetails": company or GB_COMPANY,
                        "contactPerson": contact or GB_CONTACT,
                    }
                ],
            }
        ],
    }
    return copy.deepcopy(body | changes)


async def test_markets_are_listed_and_paged_by_market_type_and_project(
    refreshed: str, v1: httpx.AsyncClient
) -> None:
    seen: list[tuple[str, str, str]] = []
    cursor: str | None = None
    for _ in range(10):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        answer = await v1.get("/v1/markets", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        seen += [(m["marketCode"], m["registrationType"], m["projectId"]) for m in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break

    alpha = "ALPHANUMERIC_SENDER_ID"
    assert seen == [
        ("AU", "SHORT_CODE", refreshed),
        ("DE", alpha, refreshed),
        ("FR", alpha, refreshed),
        ("GB", alpha, refreshed),
        ("NO", alpha, B),
        ("SE", alpha, refreshed),
        ("US", "LONG_NUMBER", refreshed),
    ]
    long_numbers = (await v1.get("/v1/markets", params={"type": "LONG_NUMBER"})).json()
    [us] = long_numbers["items"]
    assert (us["marketName"], us["available"], us["policyIds"]) == (
        "United States",
        True,
        ["sim-policy-us-longnumber"],
    )
    assert us["versions"][0]["specialConditions"]["chainedSpecialConditions"]
    only_b = (await v1.get("/v1/markets", params={"projectId": B})).json()["items"]
    assert [m["marketCode"] for m in only_b] == ["NO"]


async def test_one_market(refreshed: str, v1: httpx.AsyncClient) -> None:
    answer = await v1.get("/v1/markets/GB")

    assert answer.status_code == 200, answer.text
    market = answer.json()
    assert (market["marketCode"], market["marketName"]) == ("GB", "United Kingdom")
    assert [item["policyIds"] for item in market["items"]] == [[GB]]
    assert_problem(await v1.get("/v1/markets/ZZ"), 404)


async def test_a_policy_with_its_schema_and_no_changes_yet(
    refreshed: str, v1: httpx.AsyncClient
) -> None:
    answer = await v1.get(f"/v1/policies/{GB}")

    assert answer.status_code == 200, answer.text
    policy = answer.json()
    assert policy["document"]["jsonPolicy"] == POLICY_DOCUMENTS[GB]["jsonPolicy"]
    assert (policy["marketCode"], policy["status"], policy["changes"]) == ("GB", "ENABLED", [])
    assert policy["price"]["subscription"]["currency"] == "EUR"
    senders = policy["jsonSchema"]["properties"]["senderIds"]["items"]
    assert senders["required"] == ["senderId", "useCase"]
    disabled = (await v1.get("/v1/policies/sim-policy-fr-alphanumeric")).json()
    assert disabled["status"] == "DISABLED" and disabled["statusDisclaimer"]
    assert_problem(await v1.get("/v1/policies/no-such-policy"), 404)


async def test_a_token_limited_to_a_project_sees_only_its_catalog(
    refreshed: str, settings: Settings, api: httpx.AsyncClient
) -> None:
    token = await make_token(settings, "only-b", "read", projects=[B])

    markets = (await api.get("/v1/markets", headers=bearer(token))).json()["items"]

    assert [(m["marketCode"], m["projectId"]) for m in markets] == [("NO", B)]
    assert_problem(await api.get(f"/v1/policies/{GB}", headers=bearer(token)), 404)
    assert_problem(await api.get("/v1/markets/GB", headers=bearer(token)), 404)
    assert (await api.get("/v1/policies/b-policy", headers=bearer(token))).status_code == 200


async def test_a_valid_request_is_answered_with_its_price(
    refreshed: str, v1: httpx.AsyncClient
) -> None:
    answer = await v1.post("/v1/registrations?validateOnly=true", json=gb_request())

    assert answer.status_code == 200, answer.text
    checked = answer.json()
    assert checked["valid"] is True and checked["errors"] == []
    assert (checked["projectId"], checked["marketCode"]) == (refreshed, "GB")
    assert checked["price"] == POLICY_DOCUMENTS[GB]["price"]
    assert checked["attachments"] == [
        {
            "attachmentId": "letter-of-authorisation",
            "title": "Letter of authorisation",
            "mandatory": False,
            "allowedMimeTypes": ["application/pdf", "image/png", "image/jpeg"],
            "listed": False,
        }
    ]


async def test_a_valid_request_in_sinchs_layout_is_answered_the_same(
    refreshed: str, v1: httpx.AsyncClient
) -> None:
    answer = await v1.post("/v1/registrations?validateOnly=true", json=sinch_request())

    assert answer.status_code == 200, answer.text
    checked = answer.json()
    assert (checked["valid"], checked["errors"], checked["marketCode"]) == (True, [], "GB")
    assert checked["price"] == POLICY_DOCUMENTS[GB]["price"]


async def test_an_invalid_request_gets_one_entry_per_field_where_the_caller_put_it(
    refreshed: str, v1: httpx.AsyncClient
) -> None:
    senders = [{"senderId": "A!", "useCase": "OTHER"}]
    contact = {"firstName": "Ada", "lastName": "L", "email": "a@b.co", "phoneNumber": "0"}
    in_sinchs = sinch_request(senders, contact=contact)
    in_checks = gb_request(senderIds=senders, contactPerson=contact)

    problem = assert_problem(
        await v1.post("/v1/registrations?validateOnly=true", json=in_sinchs), 422
    )
    convenience = assert_problem(
        await v1.post("/v1/registrations?validateOnly=true", json=in_checks), 422
    )

    assert problem["price"] == POLICY_DOCUMENTS[GB]["price"]
    assert [(e["field"], e["rule"], e["fromSinch"]) for e in problem["errors"]] == [
        ("$.requestDetails[0].additionalDetails[0].contactPerson.phoneNumber", "pattern", True),
        ("$.requestDetails[0].senderIdDetails[0].senderId", "minLength", True),
        ("$.requestDetails[0].senderIdDetails[0].useCaseDescription", "required", False),
    ]
    assert problem["errors"][0]["message"] == (
        "The number needs to start with country code. For example +1"
    )
    assert [(e["field"], e["rule"]) for e in convenience["errors"]] == [
        ("$.contactPerson.phoneNumber", "pattern"),
        ("$.senderIds[0].senderId", "minLength"),
        ("$.senderIds[0].useCaseDescription", "required"),
    ]
    # `field` is the contract's name; `path` the same path.
    for entry in problem["errors"] + convenience["errors"]:
        assert entry["path"] == entry["field"]


async def test_a_body_in_both_layouts_is_refused_with_one_entry(
    refreshed: str, v1: httpx.AsyncClient
) -> None:
    body = sinch_request(senderIds=GB_SENDERS)

    problem = assert_problem(await v1.post("/v1/registrations?validateOnly=true", json=body), 422)

    [entry] = problem["errors"]
    assert (entry["field"], entry["rule"]) == ("$.requestDetails", "layout")
    assert "`senderIds`" in entry["message"]


async def test_a_disabled_policy_is_refused_with_sinchs_disclaimer(
    refreshed: str, v1: httpx.AsyncClient
) -> None:
    body = gb_request(policyId="sim-policy-fr-alphanumeric")

    problem = assert_problem(await v1.post("/v1/registrations?validateOnly=true", json=body), 422)

    first = problem["errors"][0]
    assert (first["path"], first["rule"]) == ("$.policyId", "policyStatus")
    assert first["message"] == POLICY_DOCUMENTS["sim-policy-fr-alphanumeric"]["statusDisclaimer"]


async def test_what_the_check_refuses_before_any_policy(
    refreshed: str, settings: Settings, api: httpx.AsyncClient, v1: httpx.AsyncClient
) -> None:
    # Made before the first request: an API process reads the tokens at most once a while.
    reader = await make_token(settings, "reader", "read")
    writer_b = await make_token(settings, "writer-b", "write", projects=[B])
    unknown = assert_problem(
        await v1.post("/v1/registrations?validateOnly=true", json=gb_request(policyId="nope")), 422
    )
    assert [(e["path"], e["rule"]) for e in unknown["errors"]] == [("$.policyId", "known")]
    assert_problem(
        await v1.post("/v1/registrations?validateOnly=true", json=gb_request(projectId=7)), 422
    )
    # A project that does not exist: 404, as for a create (app/submissions/router.py).
    assert_problem(
        await v1.post("/v1/registrations?validateOnly=true", json=gb_request(projectId="zz")), 404
    )
    forbidden = await api.post(
        "/v1/registrations?validateOnly=true", json=gb_request(), headers=bearer(reader)
    )
    assert_problem(forbidden, 403)
    # Naming a project the token does not see: 404 (without one, its only project, B, is meant).
    hidden = await api.post(
        "/v1/registrations?validateOnly=true",
        json=gb_request(projectId=settings.settings_project_id),
        headers=bearer(writer_b),
    )
    assert_problem(hidden, 404)
