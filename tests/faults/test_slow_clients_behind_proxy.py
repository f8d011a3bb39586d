"""deploy/nginx.conf run by a real nginx on loopback in front of the real API (issue 18, 6).

uvicorn does not bound how long a client may take to send its headers; the proxy that Compose puts
in front of the API does. This runs the repository's own nginx configuration, with only what must
differ outside Compose replaced (the upstream's address, the listening port, file paths, and shorter
timeouts so the test is quick), and shows that a client trickling its headers or its body is cut
off while a signed callback sent meanwhile passes through unchanged and is answered 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app.core.settings import Settings
from app.main import create_app
from tests.callbacks.conftest import CALLBACK_PATH, event_body, post_signed
from tests.conftest import CALLBACK_SECRET, make_settings
from tests.support.reads import events
from tests.support.servers import free_port, serve
from tests.support.signing import sign

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
BOUND = 15.0  # every wait below is bounded by this


def render(api_port: int, proxy_port: int, folder: Path) -> str:
    """deploy/nginx.conf for loopback; each replaced piece must be found exactly once."""
    text = CONFIG.read_text()

    def swap(old: str, new: str) -> None:
        nonlocal text
        assert text.count(old) == 1, f"deploy/nginx.conf no longer holds {old!r}"
        text = text.replace(old, new)

    # Compose's DNS and `resolve` (nginx >= 1.27.3, the image's) are not here: a fixed address.
    swap("    resolver 127.0.0.11 valid=10s ipv6=off;\n", "")
    swap("server api:8000 resolve;", f"server 127.0.0.1:{api_port};")
    swap("listen 8080;", f"listen 127.0.0.1:{proxy_port};")
    swap("pid /tmp/nginx.pid;", f"pid {folder}/nginx.pid;")
    swap("error_log /dev/stderr warn;", f"error_log {folder}/error.log info;")
    swap("access_log /dev/stdout;", f"access_log {folder}/access.log;")
    swap("client_header_timeout 10s;", "client_header_timeout 1s;")
    swap("client_body_timeout 10s;", "client_body_timeout 1s;")
    temp = "".join(
        f"    {kind}_temp_path {folder}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    swap("http {\n", "http {\n" + temp)
    return text


@contextlib.contextmanager
def running_nginx(config: str, folder: Path, port: int) -> Iterator[None]:
    assert NGINX is not None, "nginx is missing: `make test` installs it (scripts/services)"
    path = folder / "nginx.conf"
    path.write_text(config)
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(folder), "-c", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [NGINX, "-p", str(folder), "-c", str(path), "-g", "daemon off; user root;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Only a connection, no request: the API runs in this very event loop, which waits here.
        for _ in range(int(BOUND / 0.05)):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("nginx did not start")
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=BOUND)


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url)


@pytest.fixture
async def proxy_url(settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    async with serve(create_app(settings)) as api_url:
        api_port = urlsplit(api_url).port
        assert api_port is not None
        proxy_port = free_port()
        with running_nginx(render(api_port, proxy_port, tmp_path), tmp_path, proxy_port):
            yield f"http://127.0.0.1:{proxy_port}"


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(BOUND):
        return await reader.read()


async def trickle(writer: asyncio.StreamWriter, data: bytes, pause: float) -> None:
    with contextlib.suppress(ConnectionError):
        for byte in data:
            await asyncio.sleep(pause)
            writer.write(bytes([byte]))
            await writer.drain()


async def test_trickled_headers_and_bodies_are_cut_off_by_the_proxy(
    proxy_url: str, settings: Settings
) -> None:
    url = urlsplit(proxy_url)
    assert url.hostname is not None and url.port is not None
    slow = event_body(event_id="evt-slow")
    head = (
        f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: proxy\r\n"
        f"X-Sinch-Signature: {sign(slow, CALLBACK_SECRET)}\r\n"
        f"Content-Length: {len(slow)}\r\n\r\n"
    ).encode("ascii")

    # Headers a byte every 0.3 s: the whole header never arrives within client_header_timeout.
    header_reader, header_writer = await asyncio.open_connection(url.hostname, url.port)
    header_writer.write(head[:20])
    header_trickle = asyncio.create_task(trickle(header_writer, head[20:], 0.3))
    # A body with pauses longer than client_body_timeout between its bytes.
    body_reader, body_writer = await asyncio.open_connection(url.hostname, url.port)
    body_writer.write(head + slow[:5])
    body_trickle = asyncio.create_task(trickle(body_writer, slow[5:], 1.5))
    try:
        async with httpx.AsyncClient(base_url=proxy_url, timeout=BOUND) as client:
            quick = event_body(event_id="evt-quick")
            response = await post_signed(client, quick)
            assert response.status_code == 200

        header_answer = await until_closed(header_reader)
        body_answer = await until_closed(body_reader)
    finally:
        for task in (header_trickle, body_trickle):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        header_writer.close()
        body_writer.close()

    assert header_trickle.done() and body_trickle.done()
    # nginx drops a request whose headers time out without an answer; a slow body gets its 408.
    assert header_answer == b"" or header_answer.startswith(b"HTTP/1.1 408")
    assert body_answer == b"" or body_answer.startswith(b"HTTP/1.1 408")

    [kept] = await events(settings)
    assert kept.body == quick  # byte for byte through the proxy
    assert kept.headers["x-sinch-signature"] == sign(quick, CALLBACK_SECRET)
    assert kept.headers["x-forwarded-for"] == "127.0.0.1"
