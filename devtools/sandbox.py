"""`python -m devtools sandbox play`: a registration's lifecycle, played against a running sandbox.

`make run` without Sinch credentials runs the built-in simulator as Sinch (scripts/run). This
creates a registration at that simulator, moves it through its lifecycle one state at a time,
has the simulator deliver each signed callback to the API, and waits until the API's local copy
shows the state, so what a user sees is the service converging on Sinch's truth. It ends with the
curl commands that show the registration and its history.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

CALLBACK_PATH = "/callbacks/sinch/registrations"
DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_SIMULATOR_URL = "http://127.0.0.1:8010"
DEFAULT_LIFECYCLE = ("IN_PROGRESS", "APPROVED")
POLL_SECONDS = 0.1


class SandboxError(Exception):
    """A failure the user can act on, in one line."""


def token_command() -> str:
    """A shell line that sets TOKEN to the first internal API token, without printing it: from
    the environment when it holds one, else from ./.env (as `make run` wrote it)."""
    if os.environ.get("INTERNAL_API_TOKENS", "").strip():
        return 'TOKEN="${INTERNAL_API_TOKENS%%,*}"'
    return "TOKEN=$(sed -n 's/^INTERNAL_API_TOKENS=\\([^,]*\\).*/\\1/p' .env)"


def curl_commands(api_url: str, registration_id: str) -> list[str]:
    base = f"{api_url}/v1"
    urls = [
        f"{base}/registrations/{registration_id}",
        f"{base}/registrations/{registration_id}/history",
        f"{base}/events?registrationId={registration_id}",
    ]
    return [f'curl -sS -H "Authorization: Bearer $TOKEN" {shlex.quote(url)}' for url in urls]


async def _answers(http: httpx.AsyncClient, url: str, what: str, hint: str) -> None:
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        raise SandboxError(
            f"{what} at {url} does not answer ({type(exc).__name__}): {hint}"
        ) from None
    if response.status_code != 200:
        raise SandboxError(f"{what} at {url} answered {response.status_code}: {hint}")


async def _local_status(
    http: httpx.AsyncClient, api_url: str, registration_id: str, token: str
) -> str | None:
    response = await http.get(
        f"{api_url}/v1/registrations/{registration_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    if response.status_code == 404:
        return None
    if response.status_code == 401:
        raise SandboxError(
            "the API refused the token (401): INTERNAL_API_TOKENS here differs from the API's; "
            "run this in the folder where `make run` runs"
        )
    response.raise_for_status()
    status: str = response.json()["status"]
    return status


async def _finished_elsewhere(
    http: httpx.AsyncClient, api_url: str, registration_id: str, event_id: str, token: str
) -> str | None:
    """Why the API will not show the state: its event ended `failed` or `invalid` (named with
    its outcome and last error), or None while it is still to be processed (or was applied)."""
    response = await http.get(
        f"{api_url}/v1/events",
        params={"registrationId": registration_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    for event in response.json()["items"]:
        if event["eventId"] == event_id and event["state"] in ("failed", "invalid"):
            error = f" ({event['lastError']})" if event.get("lastError") else ""
            return (
                f"its callback event {event['id']} ended {event['state']}:{event['outcome']}{error}"
            )
    return None


def _refused(status: int | None, error: str | None, api_url: str) -> str:
    if status is None:
        return f"the simulator could not deliver to {api_url} ({error}): is the API running?"
    if status == 401:
        return (
            "the API refused the simulator's signature (401): it is not pointed at this "
            "simulator; run `make run` without SINCH_* credentials (sandbox)"
        )
    if status == 503:
        return (
            "the API answered 503 to the callback: SINCH_CALLBACK_SECRETS is not set or the "
            "database does not answer (see var/log/api.log)"
        )
    return f"the API answered {status} to the callback (see var/log/api.log)"


async def play(
    *,
    api_url: str,
    simulator_url: str,
    token: str,
    lifecycle: Sequence[str] = DEFAULT_LIFECYCLE,
    step_timeout: float = 30.0,
    say: Callable[[str], None] = print,
) -> str:
    """Play one lifecycle; answers the registration id. SandboxError names what went wrong."""
    from devtools.simulator.control import SimulatorControl

    api_url = api_url.rstrip("/")
    simulator_url = simulator_url.rstrip("/")
    async with httpx.AsyncClient(timeout=10.0) as http:
        await _answers(
            http,
            f"{simulator_url}/_sim/health",
            "the Sinch simulator",
            "is `make run` running, in sandbox mode (no SINCH_* credentials)?",
        )
        await _answers(http, f"{api_url}/healthz", "the API", "is `make run` running?")
        async with SimulatorControl(simulator_url, http) as control:
            document = await control.create_registration(
                callback_url=api_url + CALLBACK_PATH, tags=["sandbox"]
            )
            registration_id: str = document["id"]
            say(f"registration {registration_id} created at the simulator (Sinch's truth)")

            async def step(status: str, event: dict[str, Any]) -> str:
                started = time.monotonic()
                [result] = await control.deliver(event_ids=[event["eventId"]])
                if result["status"] != 200:
                    raise SandboxError(_refused(result["status"], result["error"], api_url))
                local = await _local_status(http, api_url, registration_id, token)
                while local != status:
                    ended = await _finished_elsewhere(
                        http, api_url, registration_id, event["eventId"], token
                    )
                    if ended is not None:
                        raise SandboxError(
                            f"the local copy is {local or 'absent'}, not {status}: {ended}; "
                            f"see /v1/events?registrationId={registration_id}"
                        )
                    if time.monotonic() - started > step_timeout:
                        raise SandboxError(
                            f"the local copy is {local or 'absent'}, not {status}, "
                            f"{step_timeout:.0f} s after its callback: is the worker running? "
                            "See var/log/worker.log and /v1/events?registrationId="
                            f"{registration_id}"
                        )
                    await asyncio.sleep(POLL_SECONDS)
                    local = await _local_status(http, api_url, registration_id, token)
                took = time.monotonic() - started
                say(f"  Sinch: {status:<20} callback 200, local copy: {status:<20} ({took:.1f} s)")
                return status

            local = await step(document["status"], (await control.events(registration_id))[-1])
            for status in lifecycle:
                local = await step(status, await control.transition(registration_id, status))
            truth = (await control.registration(registration_id))["status"]
        say(f"registration {registration_id}: {local} here and at Sinch (simulator: {truth})")
        history = await http.get(
            f"{api_url}/v1/registrations/{registration_id}/history",
            headers={"Authorization": f"Bearer {token}"},
        )
        history.raise_for_status()
        rows = [f"{row['toStatus']} ({row['source']})" for row in history.json()["items"]]
        say(f"its history here: {' -> '.join(rows)}")
    return registration_id
