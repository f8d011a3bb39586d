"""Bodies of every request but a callback: the bearer token is checked before a `/v1` body is read,
and no body larger than API_MAX_BODY_BYTES is read (app/web/bodies.py). Against a real API process,
whose memory is read from /proc: 50 MiB posted without a token leave it flat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.core.settings import Settings
from app.main import create_app
from tests.api.conftest import assert_problem
from tests.conftest import API_TOKEN, CALLBACK_SECRET, make_settings
from tests.support.processes import ServiceProcess, start_api
from tests.support.servers import serve

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
HUGE = 50 * 1024 * 1024
CHUNK = b"x" * (256 * 1024)
RSS_BOUND_KIB = 20 * 1024
"""How much the process may grow over all the huge requests below: far less than one body."""


def huge_body() -> Iterator[bytes]:
    """50 MiB, streamed (chunked: no Content-Length to refuse up front)."""
    for _ in range(HUGE // len(CHUNK)):
        yield CHUNK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def post_huge(base_url: str, path: str, headers: dict[str, str]) -> int | None:
    """The status of the answer to a huge streamed POST; None when the server closed the
    connection before the client could read an answer (the body was refused all the same)."""
    try:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            return client.post(path, content=huge_body(), headers=headers).status_code
    except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
        return None


@pytest.fixture
def api_process(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "INTERNAL_API_TOKENS": API_TOKEN,
        "SINCH_CALLBACK_SECRETS": CALLBACK_SECRET,
    }
    process, base_url = start_api(env, tmp_path / "api.log")
    process.env["BASE_URL"] = base_url
    try:
        yield process
    finally:
        process.stop()


def test_huge_bodies_without_a_token_or_over_the_cap_leave_memory_flat(
    api_process: ServiceProcess,
) -> None:
    base_url = api_process.env["BASE_URL"]
    assert api_process.process is not None
    pid = api_process.process.pid
    # Warm up: the routes below answered once with a small body, so that what they allocate
    # once (imports, pools) is not counted.
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.post("/v1/subscriptions", content=b"{}", headers=AUTH)
        client.post("/v1/subscriptions", content=b"{}")
        client.post("/console/sign-in", content=b"token=x")
    before = rss_kib(pid)

    answers = [
        post_huge(base_url, "/v1/subscriptions", {"Content-Type": "application/json"}),
        post_huge(base_url, "/v1/subscriptions", {"Authorization": "Bearer wrong-token"}),
        post_huge(base_url, "/v1/subscriptions", {**AUTH, "Content-Type": "application/json"}),
        post_huge(
            base_url, "/console/sign-in", {"Content-Type": "application/x-www-form-urlencoded"}
        ),
    ]
    grown = rss_kib(pid) - before
    assert grown < RSS_BOUND_KIB, f"the API grew by {grown} KiB: {answers}"
    assert answers[0] in (401, None) and answers[1] in (401, None), answers
    assert answers[2] in (413, None) and answers[3] in (413, None), answers
    # And it still answers.
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get("/v1/subscriptions", headers=AUTH).status_code == 200


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    small = make_settings(settings.database_url, settings.redis_url, api_max_body_bytes=1000)
    async with (
        serve(create_app(small)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        yield client


async def test_the_token_is_checked_before_the_body(api: httpx.AsyncClient) -> None:
    invalid = b"{this is not json"
    json = {"Content-Type": "application/json"}
    body = assert_problem(await api.post("/v1/subscriptions", content=invalid, headers=json), 401)
    assert body["detail"] == "A bearer token is required (Authorization: Bearer <token>)."
    refused = await api.post(
        "/v1/subscriptions", content=invalid, headers={**json, "Authorization": "Bearer nope"}
    )
    assert assert_problem(refused, 401)["detail"] == "The bearer token is not accepted."
    assert refused.headers["www-authenticate"] == "Bearer"
    # With the token, the body is read: not JSON is 422 as before.
    assert_problem(
        await api.post("/v1/subscriptions", content=invalid, headers={**json, **AUTH}), 422
    )


async def test_bodies_over_the_cap_are_413_declared_or_streamed(api: httpx.AsyncClient) -> None:
    declared = await api.post("/v1/subscriptions", content=b"x" * 1001, headers=AUTH)
    assert assert_problem(declared, 413)["detail"] == "The body exceeds 1000 bytes."

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"y" * 600

    streamed = await api.post("/v1/subscriptions", content=chunks(), headers=AUTH)
    assert_problem(streamed, 413)
    form = await api.post("/console/sign-in", content=b"token=" + b"z" * 1000)
    assert form.status_code == 413
    # At the cap, the body is read and answered by the route as ever.
    at_cap = b"{" + b" " * 998 + b"}"
    assert_problem(await api.post("/v1/subscriptions", content=at_cap, headers=AUTH), 422)
