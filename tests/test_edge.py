"""The edge, over real sockets against a real API process (`uvicorn ... --http
app.web.edge:GuardedHttpToolsProtocol`, as deployed): slow or stalled clients are cut off after a
bounded time and cannot starve callbacks; an encoded body is refused (415) and never kept;
`/metrics` can require METRICS_TOKEN; the documentation can be turned off.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app.core.settings import Settings
from app.main import create_app
from tests.callbacks.conftest import CALLBACK_PATH, event_body, post_signed
from tests.conftest import API_TOKEN, CALLBACK_SECRET, make_settings
from tests.support.processes import ServiceProcess, start_api
from tests.support.reads import events
from tests.support.servers import serve
from tests.support.signing import sign

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
METRICS_TOKEN = "metrics-token-never-logged"
BOUND = 15.0
"""Every wait below ends by this, far above the deadlines under test."""
SLOW_CLIENTS = 120


@pytest.fixture
def process_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "INTERNAL_API_TOKENS": API_TOKEN,
        "SINCH_CALLBACK_SECRETS": CALLBACK_SECRET,
        "HEADER_READ_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "BODY_READ_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "CALLBACK_READ_TIMEOUT_SECONDS": "1",
        "METRICS_TOKEN": METRICS_TOKEN,
    }


@pytest.fixture
def api_process(process_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    process: ServiceProcess
    process, base_url = start_api(process_env, tmp_path / "api.log")
    try:
        yield base_url
    finally:
        process.stop()
    log = (tmp_path / "api.log").read_text()
    assert API_TOKEN not in log and METRICS_TOKEN not in log and CALLBACK_SECRET not in log


@pytest.fixture
def settings(process_env: dict[str, str]) -> Settings:
    return make_settings(process_env["DATABASE_URL"], process_env["REDIS_URL"])


async def connect(base_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(base_url)
    assert url.hostname is not None and url.port is not None
    return await asyncio.open_connection(url.hostname, url.port)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    async with asyncio.timeout(BOUND):
        return await reader.read()


async def until_closed_or_reset(reader: asyncio.StreamReader) -> bytes | None:
    """`until_closed`, or None when the server reset the connection. A client that is still
    sending when the server closes gets a TCP reset (the server's kernel had unread bytes of it),
    which may discard the 408 before the client reads it: a cut-off all the same."""
    try:
        return await until_closed(reader)
    except ConnectionResetError:
        return None


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send `data` a byte at a time, slower than any deadline allows, until the peer closes."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.3)


async def metrics(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=BOUND) as client:
        answer = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert answer.status_code == 200
    return answer.text


async def test_clients_stalling_or_trickling_headers_are_cut_off_and_callbacks_go_on(
    api_process: str, settings: Settings
) -> None:
    connections = [await connect(api_process) for _ in range(SLOW_CLIENTS)]
    trickling = []
    for index, (_, writer) in enumerate(connections):
        if index % 3 == 0:
            continue  # connects and sends nothing at all
        start = f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        if index % 3 == 1:
            writer.write(start)  # a request line and a header, then a trickle of another
            trickling.append(asyncio.create_task(trickle(writer, b"X-Slow: " + b"a" * 200)))
        else:
            trickling.append(asyncio.create_task(trickle(writer, start)))  # all of it trickled

    try:
        # Meanwhile, callbacks sent whole are answered and kept.
        async with httpx.AsyncClient(base_url=api_process, timeout=BOUND) as client:
            quick = [event_body(event_id=f"evt-quick-{n}") for n in range(20)]
            answers = await asyncio.gather(*(post_signed(client, body) for body in quick))
        assert [answer.status_code for answer in answers] == [200] * 20

        closed = await asyncio.gather(*(until_closed_or_reset(reader) for reader, _ in connections))
    finally:
        for task in trickling:
            task.cancel()
        for _, writer in connections:
            writer.close()
    for index, answer in enumerate(closed):
        if answer is None:  # reset while it trickled (until_closed_or_reset)
            assert index % 3 != 0, "a client that sent nothing was reset, not answered"
            continue
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert b"application/problem+json" in answer
    assert sorted(e.body for e in await events(settings)) == sorted(quick)
    assert f'sinch_api_connections_cut_total{{phase="headers"}} {SLOW_CLIENTS}.0' in await metrics(
        api_process
    )


async def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_request(
    api_process: str,
) -> None:
    reader, writer = await connect(api_process)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(BOUND):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200 ")
        # The next request on the same connection, trickled: cut off like a first one.
        trickling = asyncio.create_task(trickle(writer, b"GET /healthz HTTP/1.1\r\n"))
        answer = await until_closed_or_reset(reader)
        trickling.cancel()
    finally:
        writer.close()
    assert answer is None or answer.startswith(b"HTTP/1.1 408 "), answer[:80]


async def test_bodies_shorter_than_their_content_length_are_cut_off(
    api_process: str, settings: Settings
) -> None:
    # An API route: the connection is closed once BODY_READ_TIMEOUT_SECONDS have passed.
    body = b'{"url": "http://127.0.0.1:9/hook"}'
    reader, writer = await connect(api_process)
    writer.write(
        b"POST /v1/subscriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {API_TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body) + 50}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    # The callback endpoint: its own, shorter deadline answers 408 first.
    callback = event_body(event_id="evt-short")
    callback_reader, callback_writer = await connect(api_process)
    callback_writer.write(
        f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + f"X-Sinch-Signature: {sign(callback, CALLBACK_SECRET)}\r\n".encode()
        + f"Content-Length: {len(callback) + 10}\r\n\r\n".encode()
        + callback
    )
    await callback_writer.drain()
    try:
        api_answer = await until_closed(reader)
        callback_answer = await until_closed(callback_reader)
    finally:
        writer.close()
        callback_writer.close()
    assert not api_answer.startswith(b"HTTP/1.1 2"), api_answer[:80]
    assert callback_answer.startswith(b"HTTP/1.1 408 "), callback_answer[:80]
    assert list(await events(settings)) == []
    assert 'sinch_api_connections_cut_total{phase="body"} 1.0' in await metrics(api_process)


async def test_an_encoded_body_is_refused_and_never_kept(
    api_process: str, settings: Settings
) -> None:
    body = gzip.compress(event_body(event_id="evt-gzip"))
    async with httpx.AsyncClient(base_url=api_process, timeout=BOUND) as client:
        answer = await client.post(
            CALLBACK_PATH,
            content=body,
            headers={
                "X-Sinch-Signature": sign(body, CALLBACK_SECRET),
                "Content-Encoding": "gzip",
                "Content-Type": "application/json",
            },
        )
        assert answer.status_code == 415
        assert answer.headers["content-type"] == "application/problem+json"
        assert "Content-Encoding" in answer.json()["detail"]

        # `identity` is no encoding: kept as usual.
        plain = event_body(event_id="evt-identity")
        answer = await client.post(
            CALLBACK_PATH,
            content=plain,
            headers={
                "X-Sinch-Signature": sign(plain, CALLBACK_SECRET),
                "Content-Encoding": "identity",
            },
        )
        assert answer.status_code == 200

        # No other route decodes a body either.
        answer = await client.post(
            "/v1/subscriptions",
            content=gzip.compress(b'{"url": "http://127.0.0.1:9/hook"}'),
            headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Encoding": "gzip"},
        )
        assert answer.status_code == 415
        assert answer.headers["content-type"] == "application/problem+json"
    assert [e.body for e in await events(settings)] == [plain]
    assert 'sinch_callbacks_total{result="unsupported_encoding"} 1.0' in await metrics(api_process)


async def test_metrics_need_the_metrics_token_when_one_is_set(api_process: str) -> None:
    async with httpx.AsyncClient(base_url=api_process, timeout=BOUND) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {API_TOKEN}"},
        ):
            answer = await client.get("/metrics", headers=headers)
            assert answer.status_code == 401
            assert answer.headers["content-type"] == "application/problem+json"
            assert METRICS_TOKEN not in answer.text
    assert "sinch_callbacks_total" in await metrics(api_process)


@pytest.fixture
async def without_docs(database_url: str, redis_url: str) -> AsyncIterator[str]:
    settings = make_settings(database_url, redis_url, docs_enabled=False)
    async with serve(create_app(settings)) as base_url:
        yield base_url


async def test_the_documentation_can_be_turned_off(without_docs: str) -> None:
    async with httpx.AsyncClient(base_url=without_docs, timeout=BOUND) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui.css"):
            assert (await client.get(path)).status_code == 404, path
        answer = await client.get("/v1/events", headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert answer.status_code == 200
        assert (await client.get("/metrics")).status_code == 200  # no METRICS_TOKEN: open
