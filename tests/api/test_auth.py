"""Every `/v1` route refuses a request without a valid bearer token; the OpenAPI document says so.

The routes are not listed here: they are walked from /openapi.json, so a route added later is
covered without touching this file.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.core.settings import Settings
from app.main import create_app
from app.web.auth import token_accepted
from tests.api.conftest import AUTH, PROBLEM, assert_problem
from tests.conftest import API_TOKEN, make_settings
from tests.support.servers import serve

# Values that make every parameter valid, so that only the token can be the reason for a 401.
SAMPLE_PATH_VALUES = {
    "id": "1",
    "projectId": "p",
    "marketCode": "GB",
    "policyId": "p1",
    "attachmentId": "a1",
}

WRONG = [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong-token"),
    pytest.param({"Authorization": f"Bearer {API_TOKEN}x"}, id="token-plus-one"),
    pytest.param({"Authorization": f"Bearer {API_TOKEN[:-1]}"}, id="token-minus-one"),
    pytest.param({"Authorization": f"Basic {API_TOKEN}"}, id="wrong-scheme"),
    pytest.param({"Authorization": "Bearer"}, id="empty-token"),
    pytest.param({"Authorization": API_TOKEN}, id="no-scheme"),
]


def v1_operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    operations = [
        (method.upper(), path.format(**SAMPLE_PATH_VALUES))
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        for method in item
    ]
    # The contract's seven routes at least; more is fine, every one is walked.
    assert len(operations) >= 7, operations
    return operations


async def assert_all_refused(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    document = (await client.get("/openapi.json")).json()
    for method, path in v1_operations(document):
        response = await client.request(method, path, headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer", (method, path)
        assert API_TOKEN not in response.text


@pytest.mark.parametrize("headers", WRONG)
async def test_every_v1_route_refuses_without_a_valid_token(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await assert_all_refused(api, headers)


async def test_the_token_is_checked_before_the_parameters(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/registrations", params={"limit": "-1", "cursor": "!"})
    assert_problem(response, 401)
    response = await api.get("/v1/events/not-a-number")
    assert_problem(response, 401)


async def test_no_token_configured_refuses_everyone(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url, internal_api_tokens=[])
    async with serve(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url) as c:
        await assert_all_refused(c, AUTH)
        await assert_all_refused(c, {})
        body = assert_problem(await c.get("/v1/events", headers=AUTH), 401)
        assert "configured" in body["detail"]


async def test_any_configured_token_is_accepted(database_url: str, redis_url: str) -> None:
    settings = make_settings(database_url, redis_url, internal_api_tokens=["old-one", API_TOKEN])
    async with serve(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url) as c:
        for token in ("old-one", API_TOKEN):
            response = await c.get("/v1/events", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200
        response = await c.get("/v1/events", headers={"Authorization": "bearer old-one"})
        assert response.status_code == 200  # the scheme is case-insensitive (RFC 9110)


def test_tokens_are_configured_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INTERNAL_API_TOKENS", " first , second,")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [t.get_secret_value() for t in settings.internal_api_tokens] == ["first", "second"]


def test_token_accepted() -> None:
    accepted = [SecretStr("alpha-token"), SecretStr("beta-token")]
    assert token_accepted("alpha-token", accepted)
    assert token_accepted("beta-token", accepted)
    assert not token_accepted("gamma-token", accepted)
    assert not token_accepted("alpha-toke", accepted)
    assert not token_accepted("", accepted)
    assert not token_accepted("alpha-token", [])
    assert not token_accepted("ünïcode", accepted)


async def test_openapi_documents_security_and_problems_on_every_v1_operation(
    api: httpx.AsyncClient,
) -> None:
    document = (await api.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "INTERNAL_API_TOKENS" in scheme["description"]
    assert "token create" in scheme["description"]
    for path, item in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation["security"] == [{"bearerAuth": []}], where
            assert operation.get("operationId"), where
            responses = operation["responses"]
            for status in ("401", "404", "422") if "{id}" in path else ("401", "422"):
                assert set(responses[status]["content"]) == {PROBLEM}, (where, status)
                schema = responses[status]["content"][PROBLEM]["schema"]
                assert {"title", "status"} <= set(schema["required"]), (where, status)
            assert "WWW-Authenticate" in responses["401"]["headers"], where
            if method != "get" or path == "/v1/audit":  # needs `write`: a `read` token gets 403
                assert set(responses["403"]["content"]) == {PROBLEM}, where
            success = next(code for code in responses if code.startswith("2"))
            if success == "204":  # no content
                assert "content" not in responses[success], where
                continue
            media = "text/event-stream" if path.endswith("/stream") else "application/json"
            if method == "get" and path.endswith("/attachments/{attachmentId}"):
                media = "application/octet-stream"  # a file, as Sinch keeps it
            assert media in responses[success]["content"], where
