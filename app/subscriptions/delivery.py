"""One delivery over HTTP: the body of a change, its Standard Webhooks signature, the POST and
what came of it (`Attempt`), and the HTTP client a subscription's job sends with. The job's loop,
which picks what to send and records the outcomes, is app/subscriptions/sender.py.

Receivers deduplicate by `webhook-id`: the same on every attempt of a delivery.
"""

from __future__ import annotations

import asyncio
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
from app.subscriptions.http import (
    ADDRESS_REFUSED,
    ANSWER_KEPT_BYTES,
    ANSWER_READ_BYTES,
    AddressRefused,
    DeliveryClient,
    Disconnected,
    InvalidAnswer,
    Network,
    address_allowed,
    is_address,
)
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


async def _answer_text(response: aiohttp.ClientResponse) -> bytes:
    """The first `ANSWER_KEPT_BYTES` of a proxied answer. Reads up to `ANSWER_READ_BYTES` so
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
    return bytes(kept)


@lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """`seconds` for a POST in all, built once per value (`ClientTimeout` is immutable, and
    building one cost about 0.5 µs of each POST)."""
    return aiohttp.ClientTimeout(total=seconds)


CLOSED_EARLY = "the receiver closed the connection without an answer"


async def post(
    http: Http,
    url: str,
    secrets: list[str],
    message: str,
    body: str,
    *,
    seconds: float,
    proxy: str | None = None,
) -> Attempt:
    """One POST of `body` as message `message` (`webhook-id`: `message_id` of a delivery), given
    `seconds` in all (connecting, sending, the answer), through `proxy` when one is given
    (`proxy_for`). Redirects are not followed (a 3xx is a failure): the URL checked at creation is
    the only place the service calls. Errors name their kind, never the URL (it may carry a token
    in its query). The attempt keeps the headers sent and the first 4 KiB of the answer."""
    at = utcnow()
    headers = signed_headers(secrets, message, at, body)
    started = time.monotonic()

    def failed(error: str) -> Attempt:
        latency = (time.monotonic() - started) * 1000
        return Attempt(None, error, at=at, request_headers=headers, latency_ms=latency)

    if proxy is not None:
        return await _post_proxied(http, url, headers, body, seconds, proxy, failed, at, started)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    try:
        async with asyncio.timeout(seconds):
            answer = await http.direct.post(url, lines.encode(), body.encode())
    except TimeoutError:  # before OSError: it is one
        return failed(f"no answer within {seconds:g} s")
    except AddressRefused:
        return failed(ADDRESS_REFUSED)
    except Disconnected:
        return failed(CLOSED_EARLY)
    except InvalidAnswer as exc:
        return failed(f"could not deliver ({exc})")
    except OSError:
        return failed("could not connect")
    except ValueError:  # UnicodeError: a host IDNA cannot encode (`a..example.com`)
        return failed("could not deliver (the URL's host is not a valid name)")
    latency_ms = (answer.head_at - started) * 1000
    return _answered(answer.status, answer.retry_after, answer.body, latency_ms, at, headers)


def _answered(
    status: int,
    retry_after: str | None,
    body: bytes,
    latency_ms: float,
    at: datetime,
    headers: dict[str, str],
) -> Attempt:
    """The attempt of a POST the receiver answered `status`."""
    ok = 200 <= status < 300
    return Attempt(
        status,
        None if ok else f"answered {status}",
        None if ok else retry_after_seconds(retry_after, utcnow()),
        at=at,
        request_headers=headers,
        response_body=body.decode("utf-8", errors="replace"),
        latency_ms=latency_ms,
    )


async def _post_proxied(
    http: Http,
    url: str,
    headers: dict[str, str],
    body: str,
    seconds: float,
    proxy: str,
    failed: Callable[[str], Attempt],
    at: datetime,
    started: float,
) -> Attempt:
    """`post` through `proxy`, by aiohttp (which speaks to proxies: CONNECT, credentials)."""
    try:
        async with http.proxied().post(
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
        return failed(CLOSED_EARLY)
    except aiohttp.ClientError as exc:
        return failed(f"could not deliver ({type(exc).__name__})")
    return _answered(status, retry_after, answer, latency_ms, at, headers)


CONCURRENCY = 32
"""POSTs in flight at once for one subscription (one job per subscription at a time): the size
of its job's connection pool."""


def tls_context() -> ssl.SSLContext:
    """The TLS settings every delivery client shares: certifi's authorities, as httpx's (Sinch's
    client). Built once per worker: building it costs more CPU than a delivery."""
    return ssl.create_default_context(cafile=certifi.where())


def refusal(url: str, allowed_hosts: Sequence[str], allowed: Sequence[Network]) -> str | None:
    """Why a delivery to `url` must not be sent now, or None: its host is not allowed by the
    settings as they stand (they may have narrowed since the subscription was made), or it is an
    address not allowed. A host NAME's addresses are checked when a connection to it is opened
    (`DeliveryClient`). Never echoes the URL."""
    try:
        check_url(url, allowed_hosts)
    except UrlRefused as exc:
        return f"not sent: {exc}"
    host = urlsplit(url).hostname or ""
    if not is_address(host):
        return None  # a name: checked when a connection is opened
    return None if address_allowed(host, allowed) else ADDRESS_REFUSED


class GuardedResolver(AbstractResolver):
    """The resolver of the aiohttp session that sends through proxies (`Http.proxied`): the
    proxies' own names (`exempt`, from the environment) are resolved unchecked, as the proxy,
    not the service, reaches the destination and resolves its name. Any other name aiohttp
    would resolve itself is refused (`AddressRefused`) when one of its addresses is not allowed
    (`address_allowed`), as the direct client (`DeliveryClient`) does: a safety net, since
    with a proxy aiohttp resolves only the proxy's name."""

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


class Http:
    """The HTTP of one subscription's job (or of one test message): its own connections, at most
    `CONCURRENCY`, so that one subscriber's slowness never takes a connection another subscriber
    or Sinch's client needs. Direct POSTs go by `direct` (app/subscriptions/http.py); those
    through a proxy by an aiohttp session made when the first is sent (`proxied`). The caller
    closes it; create it inside the running event loop."""

    def __init__(self, tls: ssl.SSLContext, allowed: Sequence[Network]) -> None:
        self._tls = tls
        self._allowed = allowed
        self.direct = DeliveryClient(tls, allowed, CONCURRENCY)
        self._proxied: aiohttp.ClientSession | None = None

    def proxied(self) -> aiohttp.ClientSession:
        """The aiohttp session for POSTs through a proxy. The environment's proxies are passed to
        each POST (`proxy_for`), not read by aiohttp (`trust_env`): it read them, and `~/.netrc`,
        for every request, in a thread. Names are resolved by a `GuardedResolver`. It keeps no
        cookies."""
        if self._proxied is None:
            resolver: Any = GuardedResolver(self._allowed, _proxy_hosts())
            self._proxied = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=CONCURRENCY, ssl=self._tls, keepalive_timeout=30, resolver=resolver
                ),
                # A receiver's cookies are never sent back: a delivery carries only its own
                # headers.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._proxied

    async def close(self) -> None:
        await self.direct.close()
        if self._proxied is not None:
            await self._proxied.close()


def delivery_client(tls: ssl.SSLContext, allowed: Sequence[Network]) -> Http:
    """The HTTP client of one subscription's job (`Http`), allowing the private `allowed`
    networks (SUBSCRIPTION_ALLOWED_NETWORKS)."""
    return Http(tls, allowed)


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, in
    either case), None when there is none or `NO_PROXY` exempts its host: what Sinch's client
    (httpx) honours too. Read once per job and URL (`sender.Route`), not for each POST."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy is None or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy
