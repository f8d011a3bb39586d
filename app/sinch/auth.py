"""OAuth2 client credentials for Sinch: one cached token, shared by every concurrent caller."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from pydantic import SecretStr

from app.sinch.errors import SinchError, SinchRejectedError, SinchRetryableError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float  # on the provider's clock

    def __repr__(self) -> str:
        return f"_Token(value='**********', expires_at={self.expires_at!r})"


def safe_url(url: str) -> str:
    """`url` fit for a message: without any user or password it may carry."""
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except (httpx.InvalidURL, TypeError):
        return "(an unreadable URL)"


@dataclass(eq=False, repr=False, slots=True)
class TokenProvider:
    """Fetches and caches the bearer token.

    Contract: `token()` returns a token valid for a while yet. At most one token request is in
    flight at any time: callers arriving while one runs wait for its result. The token is refreshed
    once `refresh_margin_seconds` (at most a fifth of its lifetime) remain of `expires_in`.
    `invalidate(token)` drops a token the API refused, unless it was already replaced, so that many
    callers refused at once cause one refresh, not one each.

    Errors: `SinchRetryableError` (timeouts, connection errors, 5xx, 429) and `SinchRejectedError`
    (wrong credentials and other 4xx), with messages that never hold the key secret or a token.
    """

    http: httpx.AsyncClient
    """Shared and owned by the caller (the `SinchClient`'s pool)."""
    _: KW_ONLY
    auth_url: str
    key_id: str
    key_secret: SecretStr
    refresh_margin_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _token: _Token | None = field(init=False, default=None)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    """Held while a token is fetched: callers arriving meanwhile wait for that one."""

    def __repr__(self) -> str:
        return f"TokenProvider(auth_url={self.auth_url!r}, key_id={self.key_id!r})"

    async def token(self) -> str:
        """A valid bearer token, fetched only when none is cached or it is about to expire."""
        current = self._token
        if current is not None and self.clock() < current.expires_at:
            return current.value
        async with self._lock:
            # Another caller may have refreshed it while this one waited for the lock.
            current = self._token
            if current is not None and self.clock() < current.expires_at:
                return current.value
            self._token = await self._fetch()
            return self._token.value

    def invalidate(self, token: str) -> None:
        """Forget `token` if it is still the cached one (the API answered 401 to it)."""
        if self._token is not None and self._token.value == token:
            self._token = None

    async def _fetch(self) -> _Token:
        started = self.clock()
        try:
            response = await self.http.post(
                self.auth_url,
                data={"grant_type": "client_credentials"},
                auth=(self.key_id, self.key_secret.get_secret_value()),
                headers={"Accept": "application/json"},
            )
        except httpx.TimeoutException as exc:
            raise SinchRetryableError(
                f"Sinch token request to {safe_url(self.auth_url)} timed out ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise SinchRetryableError(
                f"Sinch token request to {safe_url(self.auth_url)} failed "
                f"({type(exc).__name__}; check SINCH_AUTH_URL)"
            ) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise SinchRetryableError(
                f"Sinch token endpoint answered {status}",
                status_code=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 400:
            raise SinchRejectedError(
                f"Sinch token endpoint answered {status} (check SINCH_KEY_ID and SINCH_KEY_SECRET)",
                status_code=status,
            )
        try:
            body = response.json()
            value = body["access_token"]
            expires_in = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SinchError("Sinch token endpoint answered an unreadable document") from None
        if not isinstance(value, str) or not value:
            raise SinchError("Sinch token endpoint answered no access_token")
        margin = min(self.refresh_margin_seconds, expires_in / 5)
        log.info("fetched a Sinch access token valid for %.0f s", expires_in)
        return _Token(value=value, expires_at=started + expires_in - margin)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or HTTP-date); None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
