"""One delivery over HTTP: the body of a change, its Standard Webhooks signature, the POST and
what came of it (`Attempt`), and the HTTP client a subscription's job sends with. The job's loop,
which picks what to send and records the outcomes, is app/subscriptions/sender.py.

Receivers deduplicate by `webhook-id`: the same on every attempt of a delivery.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
import urllib.request
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from app.changes.schemas import ChangeOut
from app.core.db import utcnow
from app.core.models import RegistrationChange, Subscription
from app.subscriptions.rules import UrlRefused, check_url, signature
from app.subscriptions.schemas import PingData

EVENT_TYPE = "registration.changed"
PING_TYPE = "ping"
USER_AGENT = "sinch-registrations-webhooks/1"


def message_id(delivery_id: int) -> str:
    return f"msg_{delivery_id}"


class Bodies:
    """The deliveries' bodies of recent changes, by change id: each subscription's job would
    otherwise build the same body again (about 7 % of the worker's CPU with 5 subscribers). A
    numbered change never changes, so a kept body is never stale. Holds at most `size`."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._kept: OrderedDict[int, str] = OrderedDict()

    def of(self, change_id: int, change: Callable[[], RegistrationChange]) -> str:
        """Change `change_id`'s body; `change` gives the change when its body is not kept."""
        body = self._kept.get(change_id)
        if body is None:
            body = self._kept[change_id] = body_of(change())
            if len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return body


def body_of(change: RegistrationChange) -> str:
    """The delivery's body: `{"type", "timestamp", "data": <change item>}` as JSON."""
    item = ChangeOut.of(change)
    data = item.model_dump_json(by_alias=True)
    stamp = item.recorded_at.isoformat()
    return f'{{"type":"{EVENT_TYPE}","timestamp":"{stamp}","data":{data}}}'


def ping_body(subscription_id: str, at: datetime) -> str:
    """The body of a test message (`POST /v1/subscriptions/{id}/test`): `{"type": "ping",
    "timestamp", "data": PingData}` as JSON."""
    data = PingData(subscription_id=subscription_id, sent_at=at).model_dump_json(by_alias=True)
    return f'{{"type":"{PING_TYPE}","timestamp":"{at.isoformat()}","data":{data}}}'


def ping_message_id() -> str:
    """A test message's `webhook-id`: never a delivery's (`message_id`), never repeated."""
    return f"msg_ping_{uuid.uuid4().hex}"


def signing_secrets(subscription: Subscription, now: datetime) -> list[str]:
    """The secrets that sign a message to `subscription` at `now`: its own, and during a
    rotation's overlap its previous one too."""
    secrets = [subscription.secret]
    if subscription.previous_secret and (subscription.previous_secret_until or now) > now:
        secrets.append(subscription.previous_secret)
    return secrets


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """A `Retry-After` header (seconds, or an HTTP date) as seconds from `now`; None if absent or
    unreadable."""
    if not header:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds()) if when.tzinfo else None


@dataclass(frozen=True, slots=True)
class Attempt:
    """What came of one POST (or of one not sent: no `request_headers`, `error` says why)."""

    status_code: int | None
    error: str | None
    retry_after: float | None = None
    at: datetime = field(default_factory=utcnow)
    """When the POST began (or was refused)."""
    request_headers: dict[str, str] | None = None
    """The headers sent: the signature, never a secret."""
    response_body: str | None = None
    """The first `ANSWER_KEPT_BYTES` of the answer's body as text; None without an answer."""
    latency_ms: float | None = None
    """From the POST's start to the end of the answer's head (or the failure)."""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(secrets: list[str], message: str, at: datetime, body: str) -> dict[str, str]:
    """The headers of a POST of `body` as message `message` (`webhook-id`) at `at`, signed with
    every one of `secrets`."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature(secrets, message, at, body),
    }


async def _answer_text(response: aiohttp.ClientResponse) -> str:
    """The first `ANSWER_KEPT_BYTES` of the answer as text. Reads up to `ANSWER_READ_BYTES` so
    that the connection can serve the next delivery, and drops a connection whose answer goes
    on."""
    kept = bytearray()
    read = 0
    while read < ANSWER_READ_BYTES and not response.content.at_eof():
        chunk = await response.content.read(ANSWER_READ_BYTES - read)
        if not chunk:
            break
        read += len(chunk)
        if len(kept) < ANSWER_KEPT_BYTES:
            kept += chunk[: ANSWER_KEPT_BYTES - len(kept)]
    if not response.content.at_eof():
        response.close()
    return kept.decode("utf-8", errors="replace")


@lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """`seconds` for a POST in all, built once per value (`ClientTimeout` is immutable, and
    building one cost about 0.5 µs of each POST)."""
    return aiohttp.ClientTimeout(total=seconds)


async def post(
    http: aiohttp.ClientSession,
    url: str,
    secrets: list[str],
    message: str,
    body: str,
    *,
    seconds: float,
    proxy: str | None = None,
) -> Attempt:
    """One POST of `body` as message `message` (`webhook-id`: `message_id` of a delivery), given
    `seconds` in all (connecting, sending, the answer's head), through `proxy` when one is given
    (`proxy_for`). Redirects are not followed (a 3xx is a failure): the URL checked at creation is
    the only place the service calls. Errors name their kind, never the URL (it may carry a token
    in its query). The attempt keeps the headers sent and the first 4 KiB of the answer."""
    at = utcnow()
    headers = signed_headers(secrets, message, at, body)
    started = time.monotonic()

    def failed(error: str) -> Attempt:
        latency = (time.monotonic() - started) * 1000
        return Attempt(None, error, at=at, request_headers=headers, latency_ms=latency)

    try:
        async with http.post(
            url,
            data=body.encode(),
            headers=headers,
            timeout=_timeout(seconds),
            allow_redirects=False,
            proxy=proxy,
        ) as response:
            latency_ms = (time.monotonic() - started) * 1000
            status = response.status
            retry_after = response.headers.get("retry-after")
            answer = await _answer_text(response)
    except TimeoutError:
        return failed(f"no answer within {seconds:g} s")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressRefused):
            return failed(ADDRESS_REFUSED)
        return failed("could not connect")
    except aiohttp.ServerDisconnectedError:
        return failed("the receiver closed the connection without an answer")
    except aiohttp.ClientError as exc:
        return failed(f"could not deliver ({type(exc).__name__})")
    ok = 200 <= status < 300
    return Attempt(
        status,
        None if ok else f"answered {status}",
        None if ok else retry_after_seconds(retry_after, utcnow()),
        at=at,
        request_headers=headers,
        response_body=answer,
        latency_ms=latency_ms,
    )


CONCURRENCY = 32
"""POSTs in flight at once for one subscription (one job per subscription at a time): the size
of its job's connection pool."""
ANSWER_READ_BYTES = 64 * 1024
"""How much of a receiver's answer is read before its connection is reused."""
ANSWER_KEPT_BYTES = 4 * 1024
"""How much of a receiver's answer an attempt keeps (the attempts log)."""


def tls_context() -> ssl.SSLContext:
    """The TLS settings every delivery client shares: certifi's authorities, as httpx's (Sinch's
    client). Built once per worker: building it costs more CPU than a delivery."""
    return ssl.create_default_context(cafile=certifi.where())


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ADDRESS_REFUSED = (
    "not sent: the URL's host resolves to an address not allowed (loopback, private, link-local "
    "or otherwise not public; SUBSCRIPTION_ALLOWED_NETWORKS)"
)


class AddressRefused(OSError):
    """A destination's address is not one the service may call (`address_allowed`)."""


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


def refusal(url: str, allowed_hosts: Sequence[str], allowed: Sequence[Network]) -> str | None:
    """Why a delivery to `url` must not be sent now, or None: its host is not allowed by the
    settings as they stand (they may have narrowed since the subscription was made), or it is an
    address not allowed. A host NAME's addresses are checked when it is resolved
    (`GuardedResolver`). Never echoes the URL."""
    try:
        check_url(url, allowed_hosts)
    except UrlRefused as exc:
        return f"not sent: {exc}"
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None  # a name: checked by the resolver
    return None if address_allowed(host, allowed) else ADDRESS_REFUSED


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing (`AddressRefused`) a name any of whose addresses is not
    allowed (`address_allowed`): a name that resolves to 127.0.0.1 or 169.254.169.254 is never
    called. The proxies' own names (`exempt`, from the environment) are resolved unchecked: the
    proxy, not the service, reaches the destination then. aiohttp connects to the addresses
    answered here, so a name cannot resolve one way for the check and another for the call."""

    def __init__(self, allowed: Sequence[Network], exempt: frozenset[str]) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed
        self._exempt = exempt

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        if host.rstrip(".").lower() in self._exempt:
            return answers
        if not all(address_allowed(answer["host"], self._allowed) for answer in answers):
            raise AddressRefused(ADDRESS_REFUSED)
        return answers

    async def close(self) -> None:
        await self._inner.close()


def _proxy_hosts() -> frozenset[str]:
    hosts = set()
    for proxy in urllib.request.getproxies_environment().values():
        host = urlsplit(proxy if "://" in proxy else f"http://{proxy}").hostname
        if host:
            hosts.add(host.rstrip(".").lower())
    return frozenset(hosts)


def delivery_client(tls: ssl.SSLContext, allowed: Sequence[Network]) -> aiohttp.ClientSession:
    """The HTTP client of one subscription's job: a pool of its own, `CONCURRENCY` connections,
    so that one subscriber's slowness never takes a connection another subscriber or Sinch's
    client needs. aiohttp, not httpx: httpx's pool spent ten times the CPU per POST with 16 in
    flight (docs/architecture.md, "Deliveries"). The environment's proxies are passed to each
    POST (`proxy_for`), not read by aiohttp (`trust_env`): it read them, and `~/.netrc`, for
    every request, in a thread, a third of the worker's CPU at 1,000 POSTs/s. The caller closes
    it; create it inside the running event loop. Names are resolved by a `GuardedResolver`
    allowing the private `allowed` networks (SUBSCRIPTION_ALLOWED_NETWORKS). It keeps no
    cookies."""
    resolver: Any = GuardedResolver(allowed, _proxy_hosts())
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=CONCURRENCY, ssl=tls, keepalive_timeout=30, resolver=resolver
        ),
        # A receiver's cookies are never sent back: a delivery carries only its own headers.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, in
    either case), None when there is none or `NO_PROXY` exempts its host: what Sinch's client
    (httpx) honours too. Cheap enough for each sending cycle, not for each POST."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy is None or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy
