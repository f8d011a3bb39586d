"""A typed client of the simulator's `/_sim/` control API."""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from devtools.simulator.delivery import DeliveryOrder, DeliveryResult
from devtools.simulator.state import FaultPaths, format_time


def _time(value: datetime | str | None) -> str | None:
    """Sinch's time format for a datetime (naive means UTC); text passes as it is."""
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return format_time(value)


class SimulatorControl:
    """Drives a running simulator. Every method raises `httpx.HTTPStatusError` on an error answer.

    With no `http` given, it makes its own client and closes it in `aclose()` (or on leaving
    `async with`); a given client stays the caller's.
    """

    def __init__(self, base_url: str, http: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=30.0)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, json: Any = None) -> Any:
        response = await self._http.request(method, f"{self.base_url}{path}", json=json)
        response.raise_for_status()
        return response.json()

    async def create_registration(
        self,
        *,
        registration_id: str | None = None,
        registration_type: str | None = None,
        status: str | None = None,
        callback_url: str | None = None,
        at: datetime | str | None = None,
        tags: list[str] | None = None,
        sender_id: str | None = None,
        sender_ids: list[str] | None = None,
        policy_id: str | None = None,
        extra: dict[str, Any] | None = None,
        lifecycle: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create a registration (default IN_QUEUE, ALPHANUMERIC_SENDER_ID); answers its document.

        `policy_id` names a policy of the simulator's catalog (`devtools.simulator.state.POLICIES`;
        its type is then the default), else one is picked for the type; `sender_ids` (or `sender_id`
        for one) are its sender IDs, else generated; `tags` None lets the simulator add one or two.
        `extra` fields are merged into the document (to try unknown fields); `lifecycle` states are
        applied right after creation, one second apart, each recording a callback event.
        """
        body: dict[str, Any] = {
            "id": registration_id,
            "registrationType": registration_type,
            "status": status,
            "callbackUrl": callback_url,
            "at": _time(at),
            "tags": tags,
            "senderId": sender_id,
            "senderIds": sender_ids,
            "policyId": policy_id,
            "extra": extra,
        }
        body = {k: v for k, v in body.items() if v is not None}
        body["lifecycle"] = lifecycle or []
        result: dict[str, Any] = await self._request("POST", "/_sim/registrations", body)
        return result

    async def transition(
        self,
        registration_id: str,
        status: str,
        *,
        at: datetime | str | None = None,
        comment: str | None = None,
    ) -> dict[str, Any]:
        """Move a registration to `status` (any string); answers the callback event recorded.

        Without `at` the time is now, and at least one second after the previous update. `comment`
        (without one: a canned reason for REJECTED, PENDING, PENDING_ATTACHMENTS and ON_HOLD) is
        logged and sent as the event's `comments`; other moves log nothing.
        """
        body: dict[str, Any] = {"status": status}
        if at is not None:
            body["at"] = _time(at)
        if comment is not None:
            body["comment"] = comment
        path = f"/_sim/registrations/{registration_id}/transitions"
        result: dict[str, Any] = await self._request("POST", path, body)
        return result

    async def registration(self, registration_id: str) -> dict[str, Any]:
        """The simulator's truth for one registration (no auth)."""
        result: dict[str, Any] = await self._request(
            "GET", f"/_sim/registrations/{registration_id}"
        )
        return result

    async def facts(self, registration_id: str) -> dict[str, Any]:
        """The simulator's own record of a registration's facts (its oracle): `senderIds`,
        `marketCode`, `policyId`, `tags`, `etaDate`, `price`, `statusSince` and `reason`
        (`{message, state, at}` of the newest log entry, or None)."""
        path = f"/_sim/registrations/{registration_id}/facts"
        result: dict[str, Any] = await self._request("GET", path)
        return result

    async def registrations(self) -> list[dict[str, Any]]:
        """Every registration, of every type, in creation order."""
        result: list[dict[str, Any]] = await self._request("GET", "/_sim/registrations")
        return result

    async def events(self, registration_id: str) -> list[dict[str, Any]]:
        """The callback events recorded for one registration, oldest first."""
        path = f"/_sim/registrations/{registration_id}/events"
        result: list[dict[str, Any]] = await self._request("GET", path)
        return result

    async def all_events(self) -> list[dict[str, Any]]:
        """Every callback event recorded, oldest first."""
        result: list[dict[str, Any]] = await self._request("GET", "/_sim/events")
        return result

    async def deliver(
        self,
        url: str | None = None,
        *,
        event_ids: list[str] | None = None,
        order: DeliveryOrder = "in_order",
        duplicates: int = 0,
        omit: list[str] | None = None,
        seed: int | None = None,
        delay_seconds: float = 0.0,
        concurrency: int = 1,
        wait: bool = True,
    ) -> list[DeliveryResult]:
        """POST recorded events, signed, to `url` (default: each registration's callbackUrl).

        `event_ids` picks events (default: all, in recorded order); `omit` drops some; `duplicates`
        adds extra copies of random events; `seed` makes the choices repeatable. With `wait`, the
        call returns when all are delivered, with each receiver's status; without, it returns the
        plan at once (statuses None) and delivery happens after `delay_seconds`.
        """
        body: dict[str, Any] = {
            "order": order,
            "duplicates": duplicates,
            "omit": omit or [],
            "delaySeconds": delay_seconds,
            "concurrency": concurrency,
            "wait": wait,
        }
        if url is not None:
            body["url"] = url
        if event_ids is not None:
            body["eventIds"] = event_ids
        if seed is not None:
            body["seed"] = seed
        result: list[DeliveryResult] = await self._request("POST", "/_sim/deliver", body)
        return result

    async def inject_fault(
        self,
        kind: Literal["status", "hang"],
        *,
        status: int = 503,
        retry_after: float | None = None,
        count: int = 1,
        delay_seconds: float = 0.0,
        paths: FaultPaths = "api",
    ) -> None:
        """Make the next `count` requests on `paths` fail with `status` (with `Retry-After` when
        given) or, for "hang", wait `delay_seconds` before answering normally."""
        body: dict[str, Any] = {
            "kind": kind,
            "status": status,
            "count": count,
            "delaySeconds": delay_seconds,
            "paths": paths,
        }
        if retry_after is not None:
            body["retryAfter"] = retry_after
        await self._request("POST", "/_sim/faults", body)

    async def add_market_versions(
        self, versions: list[Any], *, registration_type: str | None = None
    ) -> int:
        """Serve `versions` (any JSON values) after the catalog's market versions in the list of
        `registration_type` (default ALPHANUMERIC_SENDER_ID) until reset; answers that list's
        size."""
        body: dict[str, Any] = {"marketVersions": versions}
        if registration_type is not None:
            body["registrationType"] = registration_type
        result: dict[str, int] = await self._request("POST", "/_sim/market-versions", body)
        return result["marketVersions"]

    async def revise_policy(self, policy_id: str, document: dict[str, Any]) -> dict[str, Any]:
        """Have `GET /policies/{policy_id}` answer `document` until reset (Sinch revised the
        policy); answers the document now served."""
        served: dict[str, Any] = await self._request("PUT", f"/_sim/policies/{policy_id}", document)
        return served

    async def clear_faults(self) -> None:
        await self._request("DELETE", "/_sim/faults")

    async def revoke_tokens(self) -> int:
        """Invalidate every issued token; answers how many there were."""
        result: dict[str, int] = await self._request("POST", "/_sim/tokens/revoke")
        return result["revoked"]

    async def stats(self) -> dict[str, int]:
        """Requests received by kind: token, getRegistration, listRegistrations, ..."""
        result: dict[str, int] = await self._request("GET", "/_sim/stats")
        return result

    async def reset(self) -> None:
        """Forget registrations, events, counters, faults and added market versions (issued tokens
        stay valid)."""
        await self._request("POST", "/_sim/reset")
