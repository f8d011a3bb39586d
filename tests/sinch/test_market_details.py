"""The client's walk of Sinch's market details: against the simulator over real HTTP, and against a
tiny server over real HTTP for answers the simulator does not give."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from app.sinch.client import SinchClient
from app.sinch.errors import SinchError
from app.sinch.schemas import MarketVersion
from devtools.simulator import SimulatorControl
from tests.sinch.sinch_support import ClientFactory
from tests.support.servers import serve


async def test_walks_every_registration_type_page_by_page(
    sim: SimulatorControl, make_client: ClientFactory
) -> None:
    versions = [v async for v in make_client().list_market_details(page_size=1)]

    assert [(v.market_code, v.registration_type, v.policy_ids) for v in versions] == [
        ("GB", "ALPHANUMERIC_SENDER_ID", ("sim-policy-gb-alphanumeric",)),
        ("SE", "ALPHANUMERIC_SENDER_ID", ("sim-policy-se-alphanumeric-multi",)),
        ("DE", "ALPHANUMERIC_SENDER_ID", ("sim-policy-de-alphanumeric",)),
        ("FR", "ALPHANUMERIC_SENDER_ID", ("sim-policy-fr-alphanumeric",)),
        ("US", "LONG_NUMBER", ("sim-policy-us-longnumber",)),
        ("AU", "SHORT_CODE", ("sim-policy-au-shortcode",)),
    ]
    # Four pages of alphanumeric market versions, then one page for each other type.
    assert (await sim.stats())["marketDetails"] == 7
    assert versions[0].model_extra is not None
    assert versions[0].model_extra["status"] == "ACTIVE"  # unknown fields are kept


async def test_one_type_and_one_market(sim: SimulatorControl, make_client: ClientFactory) -> None:
    client = make_client()

    long_number = [v async for v in client.list_market_details(registration_type="LONG_NUMBER")]
    sweden = [v async for v in client.list_market_details(market_code="SE")]

    assert [v.market_code for v in long_number] == ["US"]
    assert [v.market_code for v in sweden] == ["SE"]


async def test_retried_like_every_call(sim: SimulatorControl, make_client: ClientFactory) -> None:
    await sim.inject_fault("status", status=503, count=2)

    versions = [v async for v in make_client().list_market_details(registration_type="LONG_NUMBER")]

    assert [v.market_code for v in versions] == ["US"]
    assert (await sim.stats())["marketDetails"] == 3


async def test_odd_entries_end_to_end(sim: SimulatorControl, make_client: ClientFactory) -> None:
    await sim.add_market_versions(
        [
            1,
            "text",
            None,
            [],
            {"marketCode": 7, "registrationType": {"x": 1}, "specialConditions": []},
            {"marketCode": "DK", "specialConditions": {"chainedSpecialConditions": "nope"}},
            {
                "marketCode": "NO",
                "registrationType": "ALPHANUMERIC_SENDER_ID",
                "brandNewField": {"nested": [1]},
                "specialConditions": {
                    "chainedSpecialConditions": [
                        {"policyId": 5},
                        "not an object",
                        {"policyId": "p-no", "chainedSpecialConditions": [{"policyId": "p-no-2"}]},
                        {"policyId": "p-no"},
                        {"policyId": ""},
                    ]
                },
            },
        ]
    )

    versions = [
        v
        async for v in make_client().list_market_details(registration_type="ALPHANUMERIC_SENDER_ID")
    ]

    odd, denmark, norway = versions[4:]
    assert len(versions) == 7  # the entries that are not objects are skipped
    assert (odd.market_code, odd.registration_type, odd.policy_ids) == (None, None, ())
    assert (denmark.market_code, denmark.policy_ids) == ("DK", ())
    assert norway.policy_ids == ("p-no", "p-no-2")
    assert norway.model_extra is not None
    assert norway.model_extra["brandNewField"] == {"nested": [1]}


# --- answers the simulator does not give ------------------------------------------------------


def odd_sinch(pages: list[Any]) -> FastAPI:
    """A Sinch answering each market details request with the next of `pages`, the last again."""
    app = FastAPI()
    asked: list[dict[str, str]] = []
    app.state.asked = asked

    @app.post("/oauth2/token")
    async def token() -> dict[str, Any]:
        return {"access_token": "t", "token_type": "Bearer", "expires_in": 3600}

    @app.get("/v1/projects/p/markets/details")
    async def details(request: Request) -> Any:
        asked.append(dict(request.query_params))
        return pages[min(len(asked), len(pages)) - 1]

    return app


@pytest.fixture
async def odd_client() -> AsyncIterator[Any]:
    """Builds a client of an `odd_sinch` serving `pages`; answers (client, the queries asked)."""
    async with httpx.AsyncClient(timeout=5) as http:
        servers: list[Any] = []

        async def make(pages: list[Any]) -> tuple[SinchClient, list[dict[str, str]]]:
            app = odd_sinch(pages)
            context = serve(app)
            base_url = await context.__aenter__()
            servers.append(context)
            client = SinchClient(
                http,
                project_id="p",
                key_id="k",
                key_secret=SecretStr("s"),
                api_base_url=base_url,
                auth_url=f"{base_url}/oauth2/token",
                max_attempts=1,
            )
            return client, app.state.asked

        yield make
        for context in servers:
            await context.__aexit__(None, None, None)


async def test_a_repeated_page_token_is_a_cursor_loop(odd_client: Any) -> None:
    client, asked = await odd_client(
        [
            {"marketVersions": [{"marketCode": "GB"}], "nextPageToken": "a"},
            {"marketVersions": [{"marketCode": "SE"}], "nextPageToken": "b"},
            {"marketVersions": [], "nextPageToken": "a"},
        ]
    )
    seen: list[str | None] = []

    async def walk() -> None:
        async for version in client.list_market_details(registration_type="LONG_NUMBER"):
            seen.append(version.market_code)

    with pytest.raises(SinchError, match="cursor loop"):
        await walk()

    assert seen == ["GB", "SE"]
    assert [q.get("pageToken") for q in asked] == [None, "a", "b"]
    assert {q["registrationType"] for q in asked} == {"LONG_NUMBER"}
    assert asked[0]["pageSize"] == "100"


@pytest.mark.parametrize("versions", [{"marketCode": "GB"}, "GB", 3])
async def test_a_list_that_is_not_a_list(odd_client: Any, versions: Any) -> None:
    client, _ = await odd_client([{"marketVersions": versions}])

    with pytest.raises(SinchError, match="not a list"):
        _ = [v async for v in client.list_market_details()]


async def test_a_missing_list_or_token_ends_the_walk(odd_client: Any) -> None:
    client, asked = await odd_client([{"nextPageToken": 5}])

    assert [v async for v in client.list_market_details()] == []
    assert [q["registrationType"] for q in asked] == [
        "ALPHANUMERIC_SENDER_ID",
        "LONG_NUMBER",
        "SHORT_CODE",
        "RCS_AGENT",
    ]


async def test_an_answer_that_is_not_an_object(odd_client: Any) -> None:
    client, _ = await odd_client([["not", "an", "object"]])

    with pytest.raises(SinchError, match="not an object"):
        _ = [v async for v in client.list_market_details()]


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({}, (None, None, ())),
        ({"marketCode": "GB", "registrationType": "LONG_NUMBER"}, ("GB", "LONG_NUMBER", ())),
        ({"marketCode": ["GB"], "registrationType": 1}, (None, None, ())),
        ({"marketCode": "GB", "specialConditions": None}, ("GB", None, ())),
        ({"specialConditions": [{"policyId": "p"}]}, (None, None, ())),
        ({"specialConditions": {"chainedSpecialConditions": {"policyId": "p"}}}, (None, None, ())),
        (
            {"specialConditions": {"policyId": "top", "chainedSpecialConditions": []}},
            (None, None, ()),
        ),
        (
            {
                "specialConditions": {
                    "chainedSpecialConditions": [
                        None,
                        {"policyId": ["p"]},
                        {"answer": "Yes", "chainedSpecialConditions": [{"policyId": "deep"}]},
                        {"policyId": "flat", "chainedSpecialConditions": "odd"},
                        {"policyId": "deep"},
                    ]
                }
            },
            (None, None, ("deep", "flat")),
        ),
        # The model's own field names are not Sinch's: not obeyed.
        ({"policy_ids": ["forged"], "market_code": "XX"}, (None, None, ())),
    ],
)
def test_parsing_odd_documents(document: dict[str, Any], expected: tuple[Any, ...]) -> None:
    version = MarketVersion.from_document(document)

    assert version is not None
    assert (version.market_code, version.registration_type, version.policy_ids) == expected


def test_not_an_object_is_none() -> None:
    odd: tuple[object, ...] = (None, [], "x", 1, 1.5, True)
    assert [MarketVersion.from_document(v) for v in odd] == [None] * len(odd)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["policyId", "chainedSpecialConditions", "specialConditions", "marketCode", "x"]
            )
            | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(document=json_values)
def test_parsing_never_raises(document: Any) -> None:
    version = MarketVersion.from_document(json.loads(json.dumps(document)))

    if isinstance(document, dict):
        assert version is not None
        assert all(isinstance(p, str) and p for p in version.policy_ids)
        assert len(set(version.policy_ids)) == len(version.policy_ids)
        assert version.market_code is None or isinstance(version.market_code, str)
    else:
        assert version is None
