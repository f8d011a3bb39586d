"""Deliveries honour the environment's proxies (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY), as
Sinch's client does: a deployment whose internal services sit behind a forward proxy needs it.

The proxy is a real one-shot HTTP server on loopback that records the request line it was sent
(a forward proxy gets the absolute URL) and answers 200 itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import ip_network

import pytest

from app.subscriptions.delivery import delivery_client, message_id, post, proxy_for, tls_context


@dataclass
class Recorder:
    """A loopback HTTP server that answers 200 to everything and keeps each request line."""

    port: int = 0
    lines: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.lines.append(head.split(b"\r\n", 1)[0].decode())
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    found = Recorder()
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    async with server:
        yield found


def test_the_environment_names_the_proxy_and_its_exceptions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert proxy_for("https://hooks.internal/x") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("ALL_PROXY", "http://all.internal:3128")
    monkeypatch.setenv("NO_PROXY", "direct.internal,.local")
    assert proxy_for("https://hooks.internal/x") == "http://proxy.internal:3128"
    assert proxy_for("http://hooks.internal/x") == "http://all.internal:3128"
    assert proxy_for("https://direct.internal/x") is None
    assert proxy_for("https://a.b.local:8443/x") is None


async def test_a_delivery_goes_through_the_proxy_the_environment_names(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{recorder.port}")
    target = "http://receiver.internal:9999/hooks?token=t"
    http = delivery_client(tls_context(), [])
    try:
        attempt = await post(
            http,
            target,
            ["whsec_" + "A" * 43 + "="],
            message_id(1),
            "{}",
            seconds=5,
            proxy=proxy_for(target),
        )
    finally:
        await http.close()
    assert attempt.succeeded
    # A forward proxy is asked for the absolute URL: the receiver's host was never resolved here.
    assert recorder.lines == [f"POST {target} HTTP/1.1"]


async def test_a_receivers_cookies_are_never_sent_back() -> None:
    """A delivery carries nothing a receiver set before: the client keeps no cookies (nor spends
    CPU on a jar), so one receiver's answer never shapes the next request."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            heads.append(head.lower())
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\nContent-Length: 0\r\n\r\n"
            )
            await writer.drain()
            if len(heads) == 2:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # A name, not an address: a cookie jar keeps no cookie of an address.
    http = delivery_client(tls_context(), [ip_network("127.0.0.0/8"), ip_network("::1/128")])
    try:
        async with server:
            for n in (1, 2):
                url = f"http://localhost:{port}/hook"
                attempt = await post(
                    http, url, ["whsec_" + "A" * 43 + "="], message_id(n), "{}", seconds=5
                )
                assert attempt.succeeded, attempt.error
    finally:
        await http.close()
    assert len(heads) == 2
    assert all(b"\r\ncookie:" not in head for head in heads), heads
