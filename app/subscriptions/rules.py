"""The pure rules of pushing changes: which URLs a subscription may name, secrets and signatures
(Standard Webhooks), and when a failed delivery is tried again."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import math
import random
import secrets as secrets_module
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_BYTES = 32
MAX_URL_LENGTH = 2048
JITTER = 0.1
"""Each pause is stretched or shrunk by up to this share, so retries of many deliveries spread."""
MAX_RETRY_AFTER = timedelta(hours=24)


class UrlRefused(ValueError):
    """A subscription URL the service will not call; the message says why (no secret in it)."""


def check_url(url: str, allowed_hosts: Sequence[str]) -> str:
    """`url` as kept, when the service may POST to it: http or https, a host, no credentials, and
    a host that one of `allowed_hosts` (shell patterns, `*.example.com`) matches. Raises
    UrlRefused otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (an invalid port raises here)
    except ValueError:
        raise UrlRefused("the URL cannot be read") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("the URL must be http or https")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("the URL must not hold credentials")
    if not host:
        raise UrlRefused("the URL names no host")
    if parts.fragment:
        raise UrlRefused("the URL must not have a fragment")
    if not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allowed_hosts):
        raise UrlRefused(
            "the URL's host is not allowed (SUBSCRIPTION_ALLOWED_HOSTS)"
            if allowed_hosts
            else "no host is allowed: SUBSCRIPTION_ALLOWED_HOSTS is empty"
        )
    return url


REDACTED = "REDACTED"


def redacted_url(url: str) -> str:
    """`url` as a `read` token may see it: credentials and every query value replaced by
    `REDACTED` (a query item without `=` entirely: it may be a token itself); the scheme, host,
    port, path and query names kept."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    items = [
        f"{item.split('=', 1)[0]}={REDACTED}" if "=" in item else REDACTED
        for item in parts.query.split("&")
        if item
    ]
    return parts._replace(netloc=netloc, query="&".join(items)).geturl()


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes them: `whsec_` + base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets_module.token_bytes(SECRET_BYTES)).decode()


def signature(secrets: Sequence[str], message_id: str, at: datetime, body: str) -> str:
    """The `webhook-signature` header: `v1,<base64>` for each secret, space-separated. The same
    header as the reference library's `Webhook(secret).sign` (tests/api/test_subscription_rules.py
    checks it) for half its CPU: each secret is decoded and keyed once (`_keyed`), not for every
    message."""
    # The reference library's timestamp: `at` read as UTC (whatever its zone), whole seconds
    # rounded down. Replacing the zone costs more than the rest: skipped when it is UTC already.
    stamp = math.floor((at if at.tzinfo is UTC else at.replace(tzinfo=UTC)).timestamp())
    signed = f"{message_id}.{stamp}.{body}".encode()
    signatures = []
    for secret in secrets:
        mac = _keyed(secret).copy()
        mac.update(signed)
        signatures.append(f"v1,{base64.b64encode(mac.digest()).decode()}")
    return " ".join(signatures)


@lru_cache(maxsize=256)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with `secret` (`whsec_` and the key in base64, as Standard Webhooks
    writes it), fed nothing: copied for each message, never fed itself. Cached (the last 256
    secrets used): a subscription's secrets sign every one of its deliveries."""
    # Padding added as the reference library adds it: a secret written without it is read.
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
    if not key:
        raise ValueError("a signing secret holds no key")
    return hmac.new(key, digestmod=hashlib.sha256)


def next_attempt(
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    pauses: Sequence[float],
    give_up_after: timedelta,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to try a delivery again after its `attempts`-th failure, or None to give up (it would
    come later than `give_up_after` from its creation). The pause is `pauses[attempts - 1]` (the
    last repeats), jittered, and at least the receiver's `Retry-After` (capped at a day)."""
    pause = pauses[min(attempts, len(pauses)) - 1] if pauses else 0.0
    pause *= 1 + (rng or random).uniform(-JITTER, JITTER)
    if retry_after is not None:
        pause = max(pause, min(retry_after, MAX_RETRY_AFTER.total_seconds()))
    when = now + timedelta(seconds=pause)
    return None if when - created_at > give_up_after else when


CAUSES = ("http_4xx", "http_5xx", "http_other", "timeout", "connection", "not_sent", "other")
"""Why attempts fail, as health counts them (`cause`)."""


def cause(status_code: int | None, error: str | None) -> str:
    """The cause of a failed attempt (one of `CAUSES`), from its status and its error (the
    sender's own words: app/subscriptions/delivery.py)."""
    if status_code is not None:
        if 400 <= status_code < 500:
            return "http_4xx"
        return "http_5xx" if 500 <= status_code < 600 else "http_other"
    text = error or ""
    if text.startswith("no answer within"):
        return "timeout"
    if text.startswith("not sent"):
        return "not_sent"
    if text.startswith(("could not connect", "the receiver closed")):
        return "connection"
    return "other"


def failing(
    enabled: bool, failing_since: datetime | None, now: datetime, alert_after: timedelta
) -> bool:
    """Whether a subscription is flagged: enabled, and every attempt has failed for at least
    `alert_after` (SUBSCRIPTION_FAILING_ALERT_MINUTES)."""
    return enabled and failing_since is not None and now - failing_since >= alert_after
