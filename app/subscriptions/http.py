"""The HTTP/1.1 client the deliveries' POSTs go out with: one per subscription's job, keeping its
connections alive between POSTs, answers read by llhttp (httptools: the parser the API is served
with, app/web/edge.py).

Why not aiohttp for all of them: at a thousand POSTs a second, aiohttp's request path (building a
request object, its headers and payload, a timer and a task of its own per request) was a third of
the delivery worker's CPU, and that CPU is taken from the callbacks' processes on the same machine
(bench/README.md, "What a delivery costs"). Here a POST is one write of bytes made once, and an
answer is parsed in C. Deliveries through a proxy (`proxy_for`) still go by aiohttp, which speaks
to proxies (`CONNECT`, credentials); they are the exception, and this client never reads the
environment.

What a POST does, as aiohttp did it for the deliveries:
- resolves a name when it opens a connection, and refuses (`AddressRefused`) a name any of whose
  addresses is not allowed (`address_allowed`), then connects to those very addresses: a name
  cannot resolve one way for the check and another for the call;
- TLS with the worker's one context (certifi's authorities), the URL's host as server name;
- follows no redirect, sends no cookie, sends the URL's path and query as yarl encodes them;
- reads at most `ANSWER_READ_BYTES` of an answer's body, keeps `ANSWER_KEPT_BYTES`, and drops
  a connection whose answer goes on longer or that the receiver will not keep alive;
- bounds the whole of it (a free connection, connecting, sending, the answer) by one timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import httptools
from yarl import URL

ANSWER_READ_BYTES: Final = 64 * 1024
"""How much of a receiver's answer is read before its connection is reused."""
ANSWER_KEPT_BYTES: Final = 4 * 1024
"""How much of a receiver's answer an attempt keeps (the attempts log)."""
KEEPALIVE_SECONDS: Final = 30.0
"""An idle connection older than this is closed rather than used (receivers close theirs too)."""
ATTEMPT_SECONDS: Final = 2.0
"""How long connecting to one of a name's addresses (its TLS handshake included) may take while
others remain to be tried."""
HEAD_BYTES: Final = 64 * 1024
"""The most an answer's status line and headers may take: a receiver sending more (a header
without end) fails the attempt instead of filling the worker's memory."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ADDRESS_REFUSED = (
    "not sent: the URL's host resolves to an address not allowed (loopback, private, link-local "
    "or otherwise not public; SUBSCRIPTION_ALLOWED_NETWORKS)"
)


class AddressRefused(OSError):
    """A destination's address is not one the service may call (`address_allowed`)."""


class Disconnected(ConnectionError):
    """The receiver closed the connection before its answer's head was complete."""


class InvalidAnswer(ValueError):
    """The receiver's bytes are not an HTTP/1.1 answer."""


def address_allowed(address: str, allowed: Sequence[Network]) -> bool:
    """Whether the service may POST to `address`: one of `allowed` (SUBSCRIPTION_ALLOWED_NETWORKS)
    holds it, or it is a public unicast address (not loopback, private, link-local, shared,
    reserved, unspecified nor multicast). An IPv4 address mapped into IPv6 is judged as IPv4."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed if network.version == ip.version):
        return True
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's answer: its status, its `Retry-After` header, the first `ANSWER_KEPT_BYTES` of
    its body, and when (monotonic) its head ended."""

    status: int
    retry_after: str | None
    body: bytes
    head_at: float


@dataclass(frozen=True, slots=True)
class _Target:
    """What a URL's POSTs need, worked out once per URL (`_target`)."""

    origin: tuple[str, str, int]
    """(scheme, host, port): which connections may carry its POSTs."""
    host: str
    port: int
    tls: bool
    head: bytes
    """The request line and the Host header."""


@lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    parts = URL(url)
    host, port = parts.raw_host or "", parts.port or 0
    head = f"POST {parts.raw_path_qs} HTTP/1.1\r\nHost: {parts.host_port_subcomponent}\r\n"
    return _Target((parts.scheme, host, port), host, port, parts.scheme == "https", head.encode())


def is_address(host: str) -> bool:
    """Whether `host` is an IP address (a zone `%eth0` allowed), not a name."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _interleaved(addresses: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """`addresses` (resolver order) with their families alternating, the first family first
    (RFC 8305): a family that does not answer delays the other by one attempt at most."""
    first = [a for a in addresses if a[0] == addresses[0][0]] if addresses else []
    other = [a for a in addresses if a not in first]
    mixed = [a for pair in zip(first, other, strict=False) for a in pair]
    return mixed + first[len(mixed) // 2 :] + other[len(mixed) // 2 :]


class _Connection(asyncio.Protocol):
    """One connection to a receiver: one POST at a time, its answer parsed as it comes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._parser = httptools.HttpResponseParser(self)
        # As lenient as aiohttp's parser was: receivers that end lines with a bare LF, or put
        # odd bytes in a header or spaces after a chunk's size, are answered as before.
        self._parser.set_dangerous_leniencies(
            lenient_headers=True,
            lenient_optional_cr_before_lf=True,
            lenient_spaces_after_chunk_size=True,
        )
        self._waiter: asyncio.Future[Answer] | None = None
        self._keep_alive = False
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._retry_after: str | None = None
        self._framed = False
        """Its length is given (Content-Length, chunks): an end before it is a cut."""
        self._body = bytearray()
        self._read = 0
        self._head_read = 0
        self._head_at = 0.0

    # --- the connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted again
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # not an HttpParserError
            self._settle(exception=InvalidAnswer("the receiver switched protocols"))
            self.close()
            return
        except httptools.HttpParserError:
            self._settle(exception=InvalidAnswer("not an HTTP/1.1 answer"))
            self.close()
            return
        if not self._head_at:  # the head still goes on after this read
            self._head_read += len(data)
            if self._head_read > HEAD_BYTES:
                self._settle(exception=InvalidAnswer("the answer's head is too long"))
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._status >= 200 and not self._framed:
            # An answer whose body runs to the connection's end (no length given) ends here.
            self._settle(keep_alive=False)
        elif self._status >= 200:
            self._settle(exception=InvalidAnswer("the answer was cut short"))
        else:
            self._settle(exception=Disconnected())

    # --- llhttp's callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._waiter is not None and self._waiter.done():
            # An answer after the answer, in the same read: bytes nobody asked for. Left there,
            # they would be taken for the next POST's answer.
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif name == b"content-length" or (
            name == b"transfer-encoding" and value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        ):
            self._framed = True  # another transfer coding runs to the connection's end

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._head_at = time.monotonic()

    def on_body(self, body: bytes) -> None:
        if len(self._body) < ANSWER_KEPT_BYTES:
            self._body += body[: ANSWER_KEPT_BYTES - len(self._body)]
        self._read += len(body)
        if self._read > ANSWER_READ_BYTES:
            self._settle(keep_alive=False)  # an answer that goes on: not read to its end
            self.close()

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            self._reset()  # an interim answer (100 Continue, 103): the final one follows
            return
        self._settle(keep_alive=self._parser.should_keep_alive())

    # --- one POST ------------------------------------------------------------------------------
    async def exchange(self, request: bytes) -> tuple[Answer, bool]:
        """Send `request`, answer the receiver's answer and whether the connection may carry
        another POST."""
        assert self.transport is not None
        self._reset()
        self._keep_alive = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        answer = await self._waiter
        return answer, self._keep_alive and not self.closed

    def _settle(self, *, keep_alive: bool = False, exception: Exception | None = None) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if exception is not None:
            waiter.set_exception(exception)
            return
        self._keep_alive = keep_alive
        waiter.set_result(Answer(self._status, self._retry_after, bytes(self._body), self._head_at))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class DeliveryClient:
    """The connections of one subscription's job: at most `limit` open, idle ones kept for the
    next POSTs to their origin. Create it inside the running event loop; `close()` it."""

    def __init__(self, tls: ssl.SSLContext, allowed: Sequence[Network], limit: int) -> None:
        self._tls = tls
        self._allowed = allowed
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()

    async def post(self, url: str, headers: bytes, body: bytes) -> Answer:
        """POST `body` to `url` with `headers` (lines `name: value\\r\\n`, without the Host and
        Content-Length the client adds). Raises `AddressRefused`, `OSError` (could not connect),
        `Disconnected`, `InvalidAnswer`; the caller bounds the time (`asyncio.timeout`): a
        cancelled POST closes its connection."""
        target = _target(url)
        request = b"".join(
            (target.head, b"Content-Length: %d\r\n" % len(body), headers, b"\r\n", body)
        )
        async with self._slots:
            connection = self._take(target.origin) or await self._open(target)
            self._busy.add(connection)
            keep = False
            try:
                answer, keep = await connection.exchange(request)
            finally:
                self._busy.discard(connection)
                if keep:
                    connection.idle_since = time.monotonic()
                    self._idle.setdefault(target.origin, []).append(connection)
                else:
                    connection.close()
        return answer

    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        stale_before = time.monotonic() - KEEPALIVE_SECONDS
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.idle_since >= stale_before:
                return connection
            connection.close()
        return None

    async def _open(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        # A name's addresses of a family this machine has no address of are left out
        # (AI_ADDRCONFIG); an address given as the host is taken as it is.
        flags = 0 if is_address(target.host) else socket.AI_ADDRCONFIG
        answers = await loop.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM, flags=flags
        )
        if not answers or not all(
            address_allowed(str(sockaddr[0]), self._allowed) for *_, sockaddr in answers
        ):
            raise AddressRefused(ADDRESS_REFUSED)
        addresses = _interleaved([(family, str(sockaddr[0])) for family, *_, sockaddr in answers])
        failure: OSError | None = None
        for index, (family, address) in enumerate(addresses):
            last = index == len(addresses) - 1
            try:
                # Each address but the last gets `ATTEMPT_SECONDS`: a receiver whose IPv6 path
                # drops packets is reached over IPv4 instead of the whole POST's time spent there.
                async with asyncio.timeout(None if last else ATTEMPT_SECONDS):
                    _, connection = await loop.create_connection(
                        _Connection,
                        host=address,
                        port=target.port,
                        family=family,
                        ssl=self._tls if target.tls else None,
                        server_hostname=target.host.rstrip(".") if target.tls else None,
                    )
            except OSError as exc:  # TimeoutError too
                failure = exc
                continue
            return connection
        assert failure is not None
        raise failure

    async def close(self) -> None:
        """Close every connection (a POST still running fails with `Disconnected`)."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        await asyncio.sleep(0)  # let the transports' closing callbacks run
