"""A console session is bound to the token it was signed in with, not only to that token's name.

Bootstrap tokens are named by their position in `INTERNAL_API_TOKENS` (`env:1`, ...): replacing
the token at a position hands its name to the new token, and must not hand it the old sessions.
"""

from __future__ import annotations

import httpx
import pytest

from app.core.settings import Settings
from app.main import create_app
from tests.conftest import API_TOKEN, make_settings
from tests.support.servers import serve

REPLACEMENT = "replacement-token-0123456789abcdef"


async def sign_in(client: httpx.AsyncClient, token: str) -> str:
    """Sign in through the form as a browser does; answers the session cookie's value."""
    form = await client.get("/console/sign-in")
    marker = form.text.split('name="marker" value="')[1].split('"')[0]
    answer = await client.post("/console/sign-in", data={"token": token, "marker": marker})
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    return client.cookies["console_session"]


async def open_console(base_url: str, cookie: str) -> httpx.Response:
    cookies = {"console_session": cookie}
    async with httpx.AsyncClient(base_url=base_url, cookies=cookies, timeout=30) as client:
        return await client.get("/console")


@pytest.mark.parametrize("replaced_by", [[REPLACEMENT], []], ids=["replaced", "removed"])
async def test_replacing_a_bootstrap_token_ends_its_sessions(
    settings: Settings, replaced_by: list[str]
) -> None:
    async with (
        serve(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        cookie = await sign_in(client, API_TOKEN)
        assert (await open_console(base_url, cookie)).status_code == 200

    # The same database and Redis; `env:1` is now another token (or none at all).
    later = make_settings(
        settings.database_url, settings.redis_url, internal_api_tokens=replaced_by
    )
    async with serve(create_app(later)) as base_url:
        gone = await open_console(base_url, cookie)
        assert gone.status_code == 303 and gone.headers["location"] == "/console/sign-in"
        if replaced_by:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                fresh = await sign_in(client, REPLACEMENT)  # the new token signs in as env:1
            assert (await open_console(base_url, fresh)).status_code == 200
