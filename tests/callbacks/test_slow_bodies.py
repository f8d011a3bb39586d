"""Slow and vanishing clients on the callback endpoint, over real sockets on loopback (issue 18, 6).

A body that has not arrived whole within `callback_read_timeout_seconds` is answered 408 and its
connection closed; a client that leaves mid-body gets nothing kept. Neither holds up anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from app.core.settings import Settings
from app.main import create_app
from tests.callbacks.conftest import CALLBACK_PATH, event_body, post_signed
from tests.conftest import CALLBACK_SECRET, make_settings
from tests.support.reads import events
from tests.support.servers import serve
from tests.support.signing import sign

READ_TIMEOUT = 0.5
# Every wait below is bounded by this, far above READ_TIMEOUT plus the endpoint's check interval.
BOUND = 15.0


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url, callback_read_timeout_seconds=READ_TIMEOUT)


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with serve(create_app(settings)) as url:
        yield url


def request_head(body: bytes, *, content_length: int | None = None) -> bytes:
    length = len(body) if content_length is None else content_length
    return (
        f"POST {CALLBACK_PATH} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"X-Sinch-Signature: {sign(body, CALLBACK_SECRET)}\r\n"
        f"Content-Length: {length}\r\n"
        "\r\n"
    ).encode("ascii")


async def connect(base_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(base_url)
    assert url.hostname is not None and url.port is not None
    return await asyncio.open_connection(url.hostname, url.port)


async def trickle(writer: asyncio.StreamWriter, rest: bytes) -> None:
    """Send `rest` a byte at a time, slower than any deadline allows; stop when the peer closes."""
    with contextlib.suppress(ConnectionError):
        for byte in rest:
            await asyncio.sleep(0.2)
            writer.write(bytes([byte]))
            await writer.drain()


async def answer_then_close(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(BOUND):
        return await reader.read()  # until EOF


async def test_a_trickled_body_is_cut_off_with_408_and_nothing_is_kept(
    base_url: str, settings: Settings
) -> None:
    body = event_body(event_id="evt-slow")
    reader, writer = await connect(base_url)
    writer.write(request_head(body) + body[:10])
    await writer.drain()
    trickling = asyncio.create_task(trickle(writer, body[10:]))
    try:
        # Meanwhile a callback sent whole is answered at once.
        async with httpx.AsyncClient(base_url=base_url, timeout=BOUND) as client:
            quick = event_body(event_id="evt-quick")
            assert (await post_signed(client, quick)).status_code == 200

        answer = await answer_then_close(reader)
    finally:
        trickling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trickling
        writer.close()

    head, _, problem = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    assert b'"status":408' in problem
    assert [event.body for event in await events(settings)] == [quick]

    async with httpx.AsyncClient(base_url=base_url, timeout=BOUND) as client:
        text = (await client.get("/metrics")).text
    assert 'sinch_callbacks_total{result="too_slow"} 1.0' in text


async def test_many_slow_clients_are_all_cut_off_and_the_endpoint_keeps_serving(
    base_url: str, settings: Settings
) -> None:
    body = event_body(event_id="evt-slow")
    connections = [await connect(base_url) for _ in range(50)]
    for index, (_, writer) in enumerate(connections):
        # Half send nothing of the body, half a part of it.
        writer.write(request_head(body) + (body[:20] if index % 2 else b""))
        await writer.drain()

    async with httpx.AsyncClient(base_url=base_url, timeout=BOUND) as client:
        quick = [event_body(event_id=f"evt-quick-{n}") for n in range(20)]
        responses = await asyncio.gather(*(post_signed(client, payload) for payload in quick))
    assert [response.status_code for response in responses] == [200] * 20

    answers = await asyncio.gather(*(answer_then_close(reader) for reader, _ in connections))
    for _, writer in connections:
        writer.close()
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
    assert sorted(event.body for event in await events(settings)) == sorted(quick)


async def test_a_body_that_arrives_in_pieces_within_the_deadline_is_kept(
    database_url: str, redis_url: str
) -> None:
    settings = make_settings(database_url, redis_url, callback_read_timeout_seconds=BOUND)
    body = event_body(event_id="evt-pieces")
    async with serve(create_app(settings)) as base_url:
        reader, writer = await connect(base_url)
        writer.write(request_head(body))
        for start in range(0, len(body), 40):
            await asyncio.sleep(0.02)
            writer.write(body[start : start + 40])
            await writer.drain()
        async with asyncio.timeout(BOUND):
            status_line = await reader.readline()
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 200 ")
    assert [event.body for event in await events(settings)] == [body]


async def test_a_client_leaving_mid_body_keeps_nothing(base_url: str, settings: Settings) -> None:
    body = event_body(event_id="evt-gone")
    _reader, writer = await connect(base_url)
    writer.write(request_head(body, content_length=len(body) + 100) + body)
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    # The endpoint stays available, and what was sent of the body is not kept.
    async with httpx.AsyncClient(base_url=base_url, timeout=BOUND) as client:
        after = event_body(event_id="evt-after")
        assert (await post_signed(client, after)).status_code == 200
    assert [event.body for event in await events(settings)] == [after]
