"""Bodies of every request but a callback: the bearer token is checked before a `/v1` body is read,
and no body larger than API_MAX_BODY_BYTES is read (app/web/bodies.py). Against a real API process,
whose memory is read from /proc: 50 MiB posted without a token leave it flat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

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
BOUND = 15.0
"""Every wait on a raw connection below ends by this."""
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
async def api_url(settings: Settings) -> AsyncIterator[str]:
    small = make_settings(settings.database_url, settings.redis_url, api_max_body_bytes=1000)
    async with serve(create_app(small)) as base_url:
        yield base_url


@pytest.fixture
async def api(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def answer_of(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length, read off the connection: status and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await asyncio.wait_for(reader.readexactly(int(fields["content-length"])), BOUND)
    return int(lines[0].split()[1]), body


async def test_a_refused_small_body_keeps_its_answer_and_its_connection(api_url: str) -> None:
    """A client that sends its headers, then its body (as urllib3 does), gets its 401 and keeps
    the connection: closing on a client still sending resets the connection, and the reset can
    reach the client before it reads the 401 (a broken connection instead of an answer)."""
    url = urlsplit(api_url)
    assert url.hostname is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(
            b"POST /v1/subscriptions HTTP/1.1\r\nHost: api\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        )
        await writer.drain()
        status, body = await answer_of(reader)  # answered before the body was sent
        assert status == 401 and b"bearer token is required" in body
        writer.write(b"{}")  # the body comes after all: dropped, not read as a request
        writer.write(
            f"GET /v1/subscriptions HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {API_TOKEN}"
            "\r\n\r\n".encode()
        )
        await writer.drain()
        status, _ = await answer_of(reader)
        assert status == 200  # the same connection serves the next request
    finally:
        writer.close()


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
