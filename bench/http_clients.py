"""CPU per POST of the two HTTP clients the service has, httpx (Sinch) and aiohttp (deliveries),
against a minimal HTTP/1.1 server on loopback in the same process.

Why deliveries use aiohttp (docs/architecture.md, "Deliveries"): a subscription's job keeps up to
16 POSTs in flight, and httpx's connection pool does bookkeeping per request that grows with the
connections it holds. Prints requests/s and CPU microseconds per request (this process: client
and server together) at 1, 4 and 16 in flight.

Run from the repository root: `.venv/bin/python -m bench.http_clients` (a few seconds).
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

BODY = b'{"type":"registration.changed","data":{"x":"' + b"1" * 600 + b'"}}'
HEADERS = {"content-type": "application/json", "webhook-id": "msg_1"}


async def _serve() -> tuple[asyncio.Server, str]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/hook"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(post: Callable[[], Awaitable[None]], in_flight: int, total: int) -> str:
    gate = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with gate:
            await post()

    await asyncio.gather(*(one() for _ in range(200)))  # warm the pool
    cpu, began = _cpu(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    cpu, took = _cpu() - cpu, time.perf_counter() - began
    return f"{total / took:7.0f} req/s, {cpu / total * 1e6:6.0f} us CPU per request"


async def _run(kind: str, in_flight: int, total: int) -> None:
    server, url = await _serve()
    try:
        if kind == "httpx":
            limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
            async with httpx.AsyncClient(limits=limits) as client:

                async def post_httpx() -> None:
                    await client.post(url, content=BODY, headers=HEADERS, timeout=15)

                result = await _measure(post_httpx, in_flight, total)
        else:
            connector = aiohttp.TCPConnector(limit=in_flight)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def post_aiohttp() -> None:
                    async with session.post(
                        url, data=BODY, headers=HEADERS, timeout=aiohttp.ClientTimeout(total=15)
                    ) as response:
                        await response.read()

                result = await _measure(post_aiohttp, in_flight, total)
        print(f"{kind:8} {in_flight:2} in flight: {result}")
    finally:
        server.close()


def main() -> None:
    for kind in ("httpx", "aiohttp"):
        for in_flight in (1, 4, 16):
            asyncio.run(_run(kind, in_flight, 4000))


if __name__ == "__main__":
    main()
