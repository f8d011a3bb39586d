"""A NUL (or another control character) anywhere a client can put one is a 4xx, never a 500:
every query parameter of every console page and of every GET of the API (from /openapi.json, so a
route added later is covered), and every path parameter."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import API_TOKEN, AUTH
from tests.api.test_console_sessions import sign_in

CONSOLE_PAGES = {
    "/console": [],
    "/console/registrations": ["q", "status", "type", "sender_id", "market", "tag", "cursor"],
    "/console/registrations/reg-1": [],
    "/console/events": ["state", "outcome", "cursor"],
    "/console/events/replay-failed": [],
    "/console/events/1": [],
    "/console/subscriptions": [],
    "/console/subscriptions/sub_1": ["cursor"],
    "/console/audit": [],
}
CONSOLE_PATHS = [
    "/console/registrations/reg%00-1",
    "/console/subscriptions/sub%00",
    "/console/events/1%00",
    "/console/static/con%00sole.css",
]
BAD = ["%00", "a%00b", "%01", "%1f"]


def assert_refused(response: httpx.Response, where: str) -> None:
    assert 400 <= response.status_code < 500, (where, response.status_code, response.text[:300])


async def test_the_console_refuses_control_characters_in_every_input(
    api: httpx.AsyncClient,
) -> None:
    async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as console:
        await sign_in(console, API_TOKEN)
        for page, names in CONSOLE_PAGES.items():
            assert (await console.get(page)).status_code in (200, 404), page
            for name in names:
                for bad in BAD:
                    where = f"{page}?{name}={bad}"
                    assert_refused(await console.get(where), where)
        for path in CONSOLE_PATHS:
            assert_refused(await console.get(path), path)


def _queries(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(path with sample values, query parameter name) of every /v1 GET."""
    found = []
    for path, item in document["paths"].items():
        if not path.startswith("/v1/") or "get" not in item or path.endswith("/stream"):
            continue
        for parameter in item["get"].get("parameters", []):
            if parameter["in"] == "query":
                found.append((path.replace("{id}", "1"), parameter["name"]))
        if "{id}" in path:
            found.append((path.replace("{id}", "x%00y"), ""))
    return found


async def test_the_api_refuses_control_characters_in_every_input(
    api: httpx.AsyncClient,
) -> None:
    document = (await api.get("/openapi.json")).json()
    queries = _queries(document)
    assert len(queries) > 20
    for path, name in queries:
        for bad in BAD:
            where = f"{path}?{name}={bad}" if name else path
            assert_refused(await api.get(where, headers=AUTH), where)
