"""The deliveries' HTTP client (app/subscriptions/http.py) against real loopback servers that
answer as receivers do, well and badly: what it sends, how it keeps its connections, how it reads
an answer, and what each failure is called in the attempts log."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.subscriptions.delivery import CONCURRENCY, Attempt, delivery_client, post, tls_context
from app.subscriptions.http import ANSWER_KEPT_BYTES, ANSWER_READ_BYTES, HEAD_BYTES, _interleaved

LOOPBACK = [ip_network("127.0.0.0/8")]
SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
BODY = '{"type":"registration.changed","data":{}}'

Answering = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]
"""Answers one request (its head and body read); True to read the next on this connection."""


@dataclass
class Receiver:
    """A loopback server: each connection reads requests and answers them with `answering`."""

    answering: Answering
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.answering(reader, writer, request):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    servers: list[asyncio.Server] = []

    async def start(answering: Answering, tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = Receiver(answering)
        server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0, ssl=tls)
        receiver.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def answer(raw: bytes, *, keep: bool = True) -> Answering:
    async def answering(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: bytes) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep

    return answering


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def send(url: str, *, seconds: float = 5.0, tls: ssl.SSLContext | None = None) -> Attempt:
    http = delivery_client(tls or tls_context(), LOOPBACK)
    try:
        return await post(http, url, [SECRET], "msg_1", BODY, seconds=seconds)
    finally:
        await http.close()


async def test_a_post_is_what_the_receiver_needs_and_its_connection_serves_the_next(
    serve: Callable[..., Awaitable[Receiver]],
) -> None:
    receiver = await serve(answer(OK))
    http = delivery_client(tls_context(), LOOPBACK)
    try:
        url = f"http://127.0.0.1:{receiver.port}/hooks/a b?token=x y"
        attempts = [await post(http, url, [SECRET], f"msg_{n}", BODY, seconds=5) for n in range(3)]
    finally:
        await http.close()
    assert [a.status_code for a in attempts] == [200, 200, 200]
    assert [a.response_body for a in attempts] == ["ok", "ok", "ok"]
    assert receiver.connections == 1  # kept alive
    head, body = receiver.requests[0].split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    # The path and query encoded as aiohttp (yarl) encoded them; the host as the URL names it.
    assert lines[0] == "POST /hooks/a%20b?token=x+y HTTP/1.1"
    sent = dict(line.split(": ", 1) for line in lines[1:])
    assert sent["Host"] == f"127.0.0.1:{receiver.port}"
    assert sent["Content-Length"] == str(len(BODY)) and body == BODY.encode()
    assert sent["webhook-id"] == "msg_0" and sent["webhook-signature"].startswith("v1,")
    assert attempts[0].request_headers is not None
    assert attempts[0].request_headers["webhook-signature"] == sent["webhook-signature"]
    assert "Cookie" not in sent and "cookie" not in sent


async def test_a_receiver_that_closes_or_answers_at_length_gets_a_new_connection(
    serve: Callable[..., Awaitable[Receiver]],
) -> None:
    closing = await serve(
        answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", keep=False)
    )
    long_answer = b"x" * (ANSWER_READ_BYTES + 10)
    chatty = await serve(
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(long_answer) + long_answer)
    )
    http = delivery_client(tls_context(), LOOPBACK)
    try:
        for receiver in (closing, chatty):
            url = f"http://127.0.0.1:{receiver.port}/"
            for _ in range(2):
                attempt = await post(http, url, [SECRET], "msg_1", BODY, seconds=5)
                assert attempt.status_code == 200, attempt
    finally:
        await http.close()
    assert closing.connections == 2
    # Read up to 64 KiB, 4 KiB kept; a connection whose answer goes on is not reused.
    assert chatty.connections == 2
    assert attempt.response_body == "x" * ANSWER_KEPT_BYTES


@pytest.mark.parametrize(
    ("raw", "status", "body"),
    [
        # Chunks, read to their end: the connection serves the next.
        (
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            202,
            "abc",
        ),
        # An interim answer first.
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok"),
        # No length: the body runs to the connection's end.
        (b"HTTP/1.0 200 OK\r\n\r\nto the end", 200, "to the end"),
        # Another transfer coding than chunked runs to the connection's end, as no length does.
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw", 200, "raw"),
        # Lines ended by a bare LF, as aiohttp's lenient parser took them.
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 200, "ok"),
        # Bytes that are not UTF-8 are kept replaced.
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n\xff!", 400, "\ufffd!"),
    ],
)
async def test_answers_are_read_however_they_are_framed(
    serve: Callable[..., Awaitable[Receiver]], raw: bytes, status: int, body: str
) -> None:
    receiver = await serve(answer(raw, keep=b"HTTP/1.0" not in raw and b"gzip" not in raw))
    attempt = await send(f"http://127.0.0.1:{receiver.port}/")
    assert (attempt.status_code, attempt.response_body) == (status, body)
    assert attempt.succeeded == (200 <= status < 300)
    assert attempt.latency_ms is not None and attempt.latency_ms >= 0


async def test_a_refusal_keeps_its_retry_after(serve: Callable[..., Awaitable[Receiver]]) -> None:
    receiver = await serve(
        answer(b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy")
    )
    attempt = await send(f"http://127.0.0.1:{receiver.port}/")
    assert (attempt.status_code, attempt.error, attempt.retry_after) == (503, "answered 503", 7.0)
    assert attempt.response_body == "busy"


async def hang(reader: asyncio.StreamReader, _: asyncio.StreamWriter, __: bytes) -> bool:
    await reader.read()  # until the client gives up
    return False


@pytest.mark.parametrize(
    ("answering", "error", "seconds"),
    [
        (answer(b"", keep=False), "the receiver closed the connection without an answer", 5),
        (
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", keep=False),
            "could not deliver (the answer was cut short)",
            5,
        ),
        (
            answer(b"SMTP ready\r\n\r\n", keep=False),
            "could not deliver (not an HTTP/1.1 answer)",
            5,
        ),
        (
            answer(b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * (HEAD_BYTES + 1), keep=False),
            "could not deliver (the answer's head is too long)",
            5,
        ),
        (
            answer(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"
            ),
            "could not deliver (the receiver switched protocols)",
            5,
        ),
        (hang, "no answer within 0.3 s", 0.3),
    ],
    ids=["closed", "cut-short", "not-http", "head-too-long", "upgrade", "silent"],
)
async def test_each_failure_is_named_in_the_attempt(
    serve: Callable[..., Awaitable[Receiver]], answering: Answering, error: str, seconds: float
) -> None:
    receiver = await serve(answering)
    attempt = await send(f"http://127.0.0.1:{receiver.port}/", seconds=seconds)
    assert (attempt.status_code, attempt.error) == (None, error)
    assert attempt.request_headers is not None  # it was sent


async def test_nobody_listening_is_could_not_connect() -> None:
    attempt = await send("http://127.0.0.1:9/")  # the discard port: nothing listens on loopback
    assert (attempt.status_code, attempt.error) == (None, "could not connect")
    # A name IDNA cannot encode fails as an attempt, not as the job.
    attempt = await send("http://a..example.com/")
    assert attempt.error == "could not deliver (the URL's host is not a valid name)"


async def test_an_answer_after_the_answer_is_not_taken_for_the_next_one(
    serve: Callable[..., Awaitable[Receiver]],
) -> None:
    extra = b"HTTP/1.1 500 Extra\r\nContent-Length: 5\r\n\r\nab"  # in the same write
    receiver = await serve(answer(OK + extra))
    http = delivery_client(tls_context(), LOOPBACK)
    try:
        url = f"http://127.0.0.1:{receiver.port}/"
        attempts = [await post(http, url, [SECRET], "msg_1", BODY, seconds=5) for _ in range(2)]
    finally:
        await http.close()
    assert [(a.status_code, a.response_body) for a in attempts] == [(200, "ok"), (200, "ok")]
    assert receiver.connections == 2  # the first was not trusted again


async def test_posts_that_ran_out_of_time_give_their_connections_back(
    serve: Callable[..., Awaitable[Receiver]],
) -> None:
    quiet, ok = await serve(hang), await serve(answer(OK))
    http = delivery_client(tls_context(), LOOPBACK)
    try:
        for _ in range(CONCURRENCY + 1):  # more than the client's connections
            attempt = await post(
                http, f"http://127.0.0.1:{quiet.port}/", [SECRET], "msg_1", BODY, seconds=0.05
            )
            assert attempt.error == "no answer within 0.05 s"
        # Each gave its slot back: this one is not left waiting for a connection.
        attempt = await post(http, f"http://127.0.0.1:{ok.port}/", [SECRET], "m", BODY, seconds=5)
    finally:
        await http.close()
    assert attempt.status_code == 200


def test_a_names_addresses_are_tried_families_alternating() -> None:
    v6, v4 = 10, 2
    addresses = [(v6, "a"), (v6, "b"), (v6, "c"), (v4, "x"), (v4, "y")]
    assert _interleaved(addresses) == [(v6, "a"), (v4, "x"), (v6, "b"), (v4, "y"), (v6, "c")]
    assert _interleaved([(v4, "x")]) == [(v4, "x")]
    assert _interleaved([]) == []


def certificate(tmp_path: Path, name: str | None = None) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (None: 127.0.0.1 and `localhost`) and its key, as PEM
    files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name)]
                if name
                else [x509.IPAddress(ip_network("127.0.0.1/32")[0]), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    stem = name or "receiver"
    cert_path, key_path = tmp_path / f"{stem}-cert.pem", tmp_path / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_is_verified_against_the_authorities_the_client_trusts(
    serve: Callable[..., Awaitable[Receiver]], tmp_path: Path
) -> None:
    cert_path, key_path = certificate(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_path, key_path)
    receiver = await serve(answer(OK), server_tls)
    url = f"https://127.0.0.1:{receiver.port}/hooks"
    trusting = ssl.create_default_context(cafile=str(cert_path))
    attempt = await send(url, tls=trusting)
    assert (attempt.status_code, attempt.response_body) == (200, "ok")
    # The service's own authorities (certifi) do not know this certificate: nothing is sent.
    refused = await send(url)
    assert (refused.status_code, refused.error) == (None, "could not connect")
    assert len(receiver.requests) == 1
    # By name: the certificate (for `localhost` alone) is checked against the URL's name, not
    # the address connected to. (Where `localhost` also resolves to ::1, where nothing listens,
    # the next address is tried.)
    named_cert, named_key = certificate(tmp_path, name="localhost")
    named_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    named_tls.load_cert_chain(named_cert, named_key)
    named = await serve(answer(OK), named_tls)
    trusting_named = ssl.create_default_context(cafile=str(named_cert))
    http = delivery_client(trusting_named, [ip_network("127.0.0.0/8"), ip_network("::1/128")])
    try:
        by_name = await post(
            http, f"https://localhost:{named.port}/", [SECRET], "msg_2", BODY, seconds=5
        )
    finally:
        await http.close()
    assert (by_name.status_code, by_name.response_body) == (200, "ok")
    # The same certificate for a URL naming the address: refused, nothing sent.
    mismatch = await send(f"https://127.0.0.1:{named.port}/", tls=trusting_named)
    assert (mismatch.status_code, mismatch.error) == (None, "could not connect")
    assert len(named.requests) == 1
