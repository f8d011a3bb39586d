"""The Sinch Registrations API client: one typed method per operation this service uses.

Every call goes through `SinchClient._call`, which owns the in-call retry policy: a retryable
failure (timeout, connection error, 5xx, 429) is retried with jittered exponential backoff,
honouring `Retry-After`, within `max_attempts` (`SINCH_MAX_ATTEMPTS`) and a total deadline; a 401
refreshes the token once and sends the request again, which is not counted as an attempt. A caller
that owns its own retries (the worker's event job, retried by arq) asks for one attempt per call.
Nothing here logs or raises a credential, a token or a secret.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr, ValidationError

from app.core.settings import DEFAULT_SINCH_MAX_ATTEMPTS, Settings
from app.sinch.auth import TokenProvider, parse_retry_after, safe_url
from app.sinch.errors import (
    SinchError,
    SinchNotConfiguredError,
    SinchNotFoundError,
    SinchRejectedError,
    SinchRetryableError,
    SinchTimeoutError,
)
from app.sinch.schemas import (
    AvailableMarket,
    CallbackConfiguration,
    MarketVersion,
    SinchRegistration,
)

log = logging.getLogger(__name__)

# A list walk that sees this many pages is looping on a cursor, not walking one.
MAX_PAGES = 100_000
# Sinch's registration types. Its lists answer one type at a time (ALPHANUMERIC_SENDER_ID unless
# asked otherwise), so seeing them all takes one walk per type.
REGISTRATION_TYPES = ("ALPHANUMERIC_SENDER_ID", "LONG_NUMBER", "SHORT_CODE", "RCS_AGENT")
# Longest one call may take, retries and backoff sleeps included.
DEFAULT_DEADLINE_SECONDS = 20.0
# Tries of one request unless told otherwise: `SINCH_MAX_ATTEMPTS`'s default.
DEFAULT_MAX_ATTEMPTS = DEFAULT_SINCH_MAX_ATTEMPTS
# The multipart field Sinch's attachment upload reads the file from. **Unknown** (docs/sinch.md:
# no page shows the upload's body): this name and `_attachment_path` are the one place to change.
ATTACHMENT_FIELD = "file"


def create_http_client(settings: Settings) -> httpx.AsyncClient:
    """The pooled HTTP client for Sinch, with explicit timeouts (read: `sinch_timeout_seconds`).

    The caller owns it and must `aclose()` it (the lifespan or the worker's shutdown).
    """
    read = settings.sinch_timeout_seconds
    return httpx.AsyncClient(
        timeout=httpx.Timeout(read, connect=min(5.0, read), pool=min(5.0, read)),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=20, keepalive_expiry=30),
        headers={"User-Agent": "sinch-registrations/0.1"},
        follow_redirects=False,
    )


def format_sinch_time(value: datetime) -> str:
    """`value` as Sinch-style ISO 8601 UTC with whole seconds and a `Z` (naive means UTC).

    Fractions of a second are dropped (floored): Sinch keeps whole seconds, so a lower bound
    rounded down never misses a registration.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def _format_filter_time(value: datetime | date) -> str:
    if isinstance(value, datetime):
        return format_sinch_time(value)
    return value.isoformat()


class SinchClient:
    """A client of one Sinch project's Registrations API.

    `http` is shared and owned by the caller. `max_attempts` counts tries of one request (a 401
    refresh does not count), and a call may lower it for itself (`get_registration`'s
    `max_attempts`); `deadline_seconds` bounds the whole call including backoff sleeps,
    which never run past it; `sleep`, `clock` and `rng` are injectable for tests.

    Build one per event loop (in the lifespan or the worker's startup): the token lock belongs to
    the loop that first waits on it.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        project_id: str,
        key_id: str,
        key_secret: SecretStr,
        api_base_url: str,
        auth_url: str,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        backoff_base_seconds: float = 0.2,
        backoff_max_seconds: float = 5.0,
        token_refresh_margin_seconds: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._project_id = project_id
        self._api_base = api_base_url.rstrip("/")
        self._max_attempts = max_attempts
        self._deadline = deadline_seconds
        self._backoff_base = backoff_base_seconds
        self._backoff_max = backoff_max_seconds
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._tokens = TokenProvider(
            http,
            auth_url=auth_url,
            key_id=key_id,
            key_secret=key_secret,
            refresh_margin_seconds=token_refresh_margin_seconds,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"SinchClient(project_id={self._project_id!r}, api_base_url={self._api_base!r})"

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ) -> SinchClient:
        """A client for the configured project; SinchNotConfiguredError without credentials.

        Each call is tried up to `settings.sinch_max_attempts` times; `deadline_seconds` bounds
        each call, retries and backoff included (the worker keeps it below its job timeout)."""
        if not (settings.sinch_project_id and settings.sinch_key_id and settings.sinch_key_secret):
            raise SinchNotConfiguredError(
                "Sinch credentials are not configured: set SINCH_PROJECT_ID, SINCH_KEY_ID and "
                "SINCH_KEY_SECRET"
            )
        return cls(
            http,
            project_id=settings.sinch_project_id,
            key_id=settings.sinch_key_id,
            key_secret=settings.sinch_key_secret,
            api_base_url=settings.sinch_api_base_url,
            auth_url=settings.sinch_auth_url,
            max_attempts=settings.sinch_max_attempts,
            deadline_seconds=deadline_seconds,
        )

    @property
    def project_id(self) -> str:
        return self._project_id

    # --- operations -------------------------------------------------------------------------

    async def get_registration(
        self, registration_id: str, *, max_attempts: int | None = None
    ) -> SinchRegistration:
        """The registration's current state at Sinch; SinchNotFoundError when Sinch has none.

        `max_attempts` overrides the client's for this call: a caller that retries the whole
        operation itself (the worker's event job) passes 1, so retries are counted in one place.
        """
        body = await self._call(
            "GET",
            _registration_path(registration_id),
            operation="get registration",
            max_attempts=max_attempts,
        )
        registration = _parse_registration(body)
        if registration.id != registration_id:
            # Applied as it is, it would overwrite another registration's local copy.
            raise SinchError("Sinch answered a different registration than the one asked for")
        return registration

    async def list_registrations(
        self,
        *,
        update_date_from: datetime | date | None = None,
        update_date_to: datetime | date | None = None,
        create_date_from: datetime | date | None = None,
        create_date_to: datetime | date | None = None,
        registration_type: str | None = None,
        registration_state: str | None = None,
        tags: Sequence[str] | None = None,
        market_code: str | None = None,
        sender_id: str | None = None,
        order_by: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[SinchRegistration]:
        """Every registration matching the filters, walking all pages via `pageToken`.

        Filters are Sinch's (docs/sinch.md); times go out as ISO 8601 UTC whole seconds. Sinch's
        `updateDateFrom` is inclusive at whole seconds, so a watermark should overlap. Sinch
        defaults `registrationType` to ALPHANUMERIC_SENDER_ID: pass each type to see them all.
        Each page is fetched with the client's retry policy; an error stops the walk.
        """
        params: list[tuple[str, str]] = [("pageSize", str(page_size))]
        for name, when in (
            ("updateDateFrom", update_date_from),
            ("updateDateTo", update_date_to),
            ("createDateFrom", create_date_from),
            ("createDateTo", create_date_to),
        ):
            if when is not None:
                params.append((name, _format_filter_time(when)))
        for name, text in (
            ("registrationType", registration_type),
            ("registrationState", registration_state),
            ("marketCode", market_code),
            ("senderId", sender_id),
            ("orderBy", order_by),
        ):
            if text is not None:
                params.append((name, text))
        params.extend(("tags", tag) for tag in tags or ())

        async for document in self._walk_pages(
            "/registrations", params, key="registrations", operation="list"
        ):
            yield _parse_registration(document)

    async def list_market_details(
        self,
        *,
        registration_type: str | None = None,
        market_code: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[MarketVersion]:
        """Sinch's market versions (GET /markets/details), walking all pages via `pageToken`.

        Each links policies to a market (`MarketVersion.policy_ids`). Sinch answers one
        registration type per list, ALPHANUMERIC_SENDER_ID by default, so without
        `registration_type` every type of `REGISTRATION_TYPES` is walked in turn. An entry that is
        not an object is skipped; the walk's errors are `list_registrations`'.
        """
        kinds = REGISTRATION_TYPES if registration_type is None else (registration_type,)
        for kind in kinds:
            params = [("pageSize", str(page_size)), ("registrationType", kind)]
            if market_code is not None:
                params.append(("marketCode", market_code))
            async for document in self._walk_pages(
                "/markets/details", params, key="marketVersions", operation="market_details"
            ):
                version = MarketVersion.from_document(document)
                if version is not None:
                    yield version

    async def get_market(self, market_code: str) -> list[MarketVersion]:
        """Every market version of one market, all registration types (GET /markets/details
        filtered by `marketCode`); empty when Sinch has none."""
        return [version async for version in self.list_market_details(market_code=market_code)]

    async def list_market_availability(
        self, registration_type: str, *, market_code: str | None = None
    ) -> list[AvailableMarket]:
        """The markets open to registrations of `registration_type` (GET /markets/availability,
        one list, not paged). An entry without a string `marketCode` is skipped."""
        params = [("registrationType", registration_type)]
        if market_code is not None:
            params.append(("marketCode", market_code))
        body = await self._call(
            "GET", "/markets/availability", params=params, operation="market availability"
        )
        items = body.get("markets") or []
        if not isinstance(items, list):
            raise SinchError("Sinch answered a markets list that is not a list")
        found = (AvailableMarket.from_document(item) for item in items)
        return [market for market in found if market is not None]

    async def get_policy(self, policy_id: str) -> dict[str, Any]:
        """A policy's document as Sinch sent it (GET /policies/{policyId}: its field rules,
        attachments, status and price); SinchNotFoundError when Sinch has no such policy."""
        return await self._call(
            "GET", f"/policies/{quote(policy_id, safe='')}", operation="get policy"
        )

    async def get_callback_configuration(self) -> CallbackConfiguration:
        """The project's callback configuration (its HMAC secret); 404 for an unknown project."""
        body = await self._call("GET", "/callback-configuration", operation="get callback config")
        return _parse_callback_configuration(body)

    async def put_callback_configuration(self, hmac_secret: SecretStr) -> CallbackConfiguration:
        """Set the secret Sinch signs callbacks with; answers the configuration Sinch stored."""
        body = await self._call(
            "PUT",
            "/callback-configuration",
            json={"hmacSecret": hmac_secret.get_secret_value()},
            operation="put callback config",
        )
        return _parse_callback_configuration(body)

    # --- writes (issue 27): Sinch's answer is the truth the caller applies ------------------------

    async def create_registration(self, body: dict[str, Any]) -> SinchRegistration:
        """POST a new registration (`body` as Sinch's create takes it); answers Sinch's document.

        Tried once: Sinch documents no idempotency key for its create, so a second try after a
        timeout or a 5xx could make a second registration. A 401 still refreshes the token and
        sends it again (Sinch refused it before reading it). SinchRejectedError (with Sinch's
        `error`) for a 4xx; SinchTimeoutError when no answer came in time (it may exist then).
        """
        answer = await self._call(
            "POST", "/registrations", json=body, operation="create registration", max_attempts=1
        )
        return _parse_registration(answer)

    async def update_registration(
        self, registration_id: str, body: dict[str, Any]
    ) -> SinchRegistration:
        """PUT the registration's new content; answers Sinch's document. Retried like a GET: a PUT
        states the whole new content, so sending it twice leaves what sending it once does."""
        answer = await self._call(
            "PUT",
            _registration_path(registration_id),
            json=body,
            operation="update registration",
        )
        registration = _parse_registration(answer)
        if registration.id != registration_id:
            raise SinchError("Sinch answered a different registration than the one updated")
        return registration

    async def delete_registration(self, registration_id: str) -> None:
        """DELETE the registration at Sinch (retried: deleting twice deletes once).

        SinchNotFoundError when Sinch has none (or no longer: an earlier try that timed out may
        have deleted it); whatever body Sinch answers is not read.
        """
        await self._call(
            "DELETE",
            _registration_path(registration_id),
            operation="delete registration",
            expect_body=False,
        )

    async def upload_attachment(
        self,
        registration_id: str,
        attachment_id: str,
        *,
        file_name: str,
        mime_type: str,
        content: bytes,
    ) -> None:
        """POST one attachment of the registration (`attachment_id`: the policy's attachment
        definition) as a multipart body, the file under `ATTACHMENT_FIELD`. Retried like a PUT:
        the same file sent twice to the same attachment leaves what sending it once does. Sinch's
        answer is not read (its shape is not documented): the caller GETs the registration,
        whose `attachments[]` shows the upload. SinchRejectedError (with Sinch's `error`) for a
        4xx, SinchNotFoundError for a 404."""
        await self._call(
            "POST",
            _attachment_path(registration_id, attachment_id),
            files={ATTACHMENT_FIELD: (file_name, content, mime_type)},
            operation="upload attachment",
            expect_body=False,
        )

    @asynccontextmanager
    async def open_attachment(
        self, registration_id: str, attachment_id: str
    ) -> AsyncIterator[httpx.Response]:
        """GET an attachment uploaded before, as a streamed response whose body is read while
        the context is open (`aiter_bytes`). Tried once (a caller downloading can ask again),
        with one fresh token after a 401; the answer's status is checked before this yields:
        SinchNotFoundError for a 404, SinchRejectedError for another 4xx, SinchRetryableError for
        a 5xx, 429 or no connection, SinchTimeoutError when the headers do not come within the
        client's deadline."""
        url = self._url(_attachment_path(registration_id, attachment_id))
        operation = "download attachment"
        for fresh in (False, True):
            token = await self._tokens.token()
            request = self._http.build_request(
                "GET", url, headers={"Authorization": f"Bearer {token}"}
            )
            try:
                async with asyncio.timeout(self._deadline):
                    response = await self._http.send(request, stream=True)
            except (TimeoutError, httpx.TimeoutException):
                raise SinchTimeoutError(f"Sinch {operation}: no answer in time") from None
            except httpx.TransportError as exc:
                raise SinchRetryableError(
                    f"Sinch {operation} at {safe_url(self._api_base)} failed "
                    f"({type(exc).__name__}; check SINCH_API_BASE_URL)"
                ) from None
            try:
                if response.status_code == 401 and not fresh:
                    self._tokens.invalidate(token)
                    continue
                if response.status_code >= 300:
                    await response.aread()  # a small error body, for Sinch's error object
                    _read_response(response, operation, expect_body=False)
                    raise SinchError(f"Sinch {operation} answered {response.status_code}")
                yield response
                return
            finally:
                await response.aclose()

    async def _walk_pages(
        self, path: str, params: list[tuple[str, str]], *, key: str, operation: str
    ) -> AsyncIterator[object]:
        """The items of list `key` on every page of `path`, following `nextPageToken` until it is
        empty or absent. SinchError for a `key` that is not a list, a token seen before (a cursor
        loop) or more than MAX_PAGES pages; each page has the client's retry policy."""
        page_token: str | None = None
        seen_tokens: set[str] = set()
        for _ in range(MAX_PAGES):
            query = [*params, ("pageToken", page_token)] if page_token else params
            body = await self._call("GET", path, params=query, operation=operation)
            items = body.get(key) or []
            if not isinstance(items, list):
                raise SinchError(f"Sinch answered a {key} list that is not a list")
            for item in items:
                yield item
            next_token = body.get("nextPageToken")
            if not next_token or not isinstance(next_token, str):
                return
            if next_token in seen_tokens:
                raise SinchError("Sinch answered a page token it had already given (cursor loop)")
            seen_tokens.add(next_token)
            page_token = next_token
        raise SinchError(f"Sinch {operation} went past {MAX_PAGES} pages")

    # --- transport --------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Sequence[tuple[str, str]] | None = None,
        json: dict[str, Any] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        max_attempts: int | None = None,
        expect_body: bool = True,
    ) -> dict[str, Any]:
        """One API call with the retry policy (at most `max_attempts` tries, the client's when
        None); answers the JSON object Sinch sent (`{}` when `expect_body` is False: the body of
        a 2xx is not read). `files` makes the body multipart (field: (name, content, type))."""
        if max_attempts is None:
            max_attempts = self._max_attempts
        elif max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        url = self._url(path)
        deadline = self._clock() + self._deadline
        attempt = 0
        refreshed_after_401 = False
        while True:
            attempt += 1
            token: str | None = None
            error: SinchRetryableError
            try:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise SinchTimeoutError(f"Sinch {operation}: deadline exceeded")
                async with asyncio.timeout(remaining):
                    token = await self._tokens.token()
                    response = await self._http.request(
                        method,
                        url,
                        params=tuple(params or ()),
                        json=json,
                        files=files,
                        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    )
                if response.status_code == 401 and not refreshed_after_401:
                    # The token may have been revoked or expired early: one fresh token, one retry.
                    refreshed_after_401 = True
                    self._tokens.invalidate(token)
                    attempt -= 1
                    log.info("Sinch %s answered 401; refreshing the token once", operation)
                    continue
                return _read_response(response, operation, expect_body=expect_body)
            except TimeoutError:
                error = SinchTimeoutError(f"Sinch {operation}: deadline exceeded")
            except httpx.TimeoutException as exc:
                error = SinchTimeoutError(
                    f"Sinch {operation} at {safe_url(self._api_base)} timed out "
                    f"({type(exc).__name__})"
                )
            except httpx.TransportError as exc:
                error = SinchRetryableError(
                    f"Sinch {operation} at {safe_url(self._api_base)} failed "
                    f"({type(exc).__name__}; check SINCH_API_BASE_URL)"
                )
            except SinchRetryableError as exc:
                error = exc

            if attempt >= max_attempts:
                raise error
            delay = self._backoff(attempt, error.retry_after)
            if self._clock() + delay >= deadline:
                raise error
            log.warning(
                "Sinch %s: retryable failure (%s), attempt %d of %d, retrying in %.2f s",
                operation,
                error.status_code or "no answer",
                attempt,
                max_attempts,
                delay,
            )
            await self._sleep(delay)

    def _url(self, path: str) -> str:
        return f"{self._api_base}/v1/projects/{quote(self._project_id, safe='')}{path}"

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff jittered over its upper half, or exactly what `Retry-After` asked."""
        if retry_after is not None:
            return retry_after
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling)


def _registration_path(registration_id: str) -> str:
    return f"/registrations/{quote(registration_id, safe='')}"


def _attachment_path(registration_id: str, attachment_id: str) -> str:
    """Where one attachment of a registration is uploaded and downloaded: the path Sinch's
    overview names (docs/sinch.md)."""
    return f"{_registration_path(registration_id)}/attachments/{quote(attachment_id, safe='')}"


def _error_of(response: httpx.Response) -> dict[str, Any] | None:
    """Sinch's error object of a 4xx (`{"error": {"code", "message", "status", "details"}}`),
    None when the body is not of that shape."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _read_response(
    response: httpx.Response, operation: str, *, expect_body: bool = True
) -> dict[str, Any]:
    status = response.status_code
    if status == 429 or status == 408 or status >= 500:
        raise SinchRetryableError(
            f"Sinch {operation} answered {status}",
            status_code=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status == 404:
        raise SinchNotFoundError(
            f"Sinch {operation} answered 404", status_code=status, error=_error_of(response)
        )
    if status >= 400:
        raise SinchRejectedError(
            f"Sinch {operation} answered {status}", status_code=status, error=_error_of(response)
        )
    if not expect_body:
        return {}
    try:
        body = response.json()
    except ValueError:
        raise SinchError(f"Sinch {operation} answered a body that is not JSON") from None
    if not isinstance(body, dict):
        raise SinchError(f"Sinch {operation} answered JSON that is not an object")
    return body


def _parse_registration(document: object) -> SinchRegistration:
    if not isinstance(document, dict):
        raise SinchError("Sinch answered a registration that is not a JSON object")
    try:
        return SinchRegistration.from_document(document)
    except ValidationError:
        raise SinchError("Sinch answered a registration without a usable id or status") from None


def _parse_callback_configuration(body: dict[str, Any]) -> CallbackConfiguration:
    try:
        return CallbackConfiguration.model_validate(body)
    except ValidationError:
        # pydantic's message would quote the input, which holds the secret.
        raise SinchError("Sinch answered an unreadable callback configuration") from None
