"""The simulator's write routes, as Sinch documents them (docs/sinch.md): create (`POST
/registrations`), update (`PUT /registrations/{id}`) and delete (`DELETE /registrations/{id}`).

A created registration starts in IN_QUEUE (PENDING_ATTACHMENTS when its policy has mandatory
attachments: devtools/simulator/attachments.py takes the uploads) and then lives like any other
of the simulator's: its callbacks are recorded (the creation's first), delivered to its
`callbackUrl` by `/_sim/deliver`, and it moves with `/_sim/registrations/{id}/transitions`.

Refusals answer Sinch's error body, `{"error": {"code", "message", "status", "details"}}`, with
the fields at fault in `details` (a `google.rpc.BadRequest`'s `fieldViolations`, the shape
Google-style APIs such as Sinch's use). Checked here: the top-level fields (present, of the right
kind), the registration type, the market, the policy and how many sender IDs it allows. The
policy's own field rules are the catalog's (devtools/simulator/catalog.py), not this module's.

Which states accept an update or a delete is not documented: here an update is refused once the
registration is decided (APPROVED, REJECTED), and answering PENDING or PENDING_ATTACHMENTS moves
it back to IN_QUEUE; a delete is accepted in any state, and the registration is gone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request, Response
from fastapi.responses import JSONResponse

from devtools.simulator.catalog import POLICY_DOCUMENTS
from devtools.simulator.state import (
    MARKET_VERSIONS,
    POLICIES,
    SimulatorInputError,
    SimulatorState,
    format_time,
    parse_time,
)

REGISTRATION_TYPES = ("ALPHANUMERIC_SENDER_ID", "LONG_NUMBER", "SHORT_CODE", "RCS_AGENT")
DECIDED = frozenset({"APPROVED", "REJECTED"})
"""States in which an update is refused (FAILED_PRECONDITION)."""
ANSWERED = frozenset({"PENDING", "PENDING_ATTACHMENTS"})
"""States an update answers: the registration goes back to IN_QUEUE."""
REQUIRED = ("registrationType", "policyId", "requestDetails")
"""Top-level fields a create must have."""
LISTS = ("tags", "notificationContacts", "requestDetails")
"""Top-level fields that must be arrays when given."""
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

Violation = dict[str, str]
RegistrationId = Annotated[str, Path(alias="registrationId")]


def sinch_error(
    code: int, status: str, message: str, violations: list[Violation] | None = None
) -> JSONResponse:
    """Sinch's error body: `code` (the HTTP status), `status` (its canonical name, such as
    `INVALID_ARGUMENT`), `message`, and `details` (the fields at fault, when there are some)."""
    details: list[dict[str, Any]] = (
        [{"@type": BAD_REQUEST_TYPE, "fieldViolations": violations}] if violations else []
    )
    return JSONResponse(
        {"error": {"code": code, "message": message, "status": status, "details": details}},
        status_code=code,
    )


def _invalid(violations: list[Violation]) -> JSONResponse:
    return sinch_error(400, "INVALID_ARGUMENT", "Invalid registration request", violations)


def _not_found(registration_id: str) -> JSONResponse:
    return sinch_error(404, "NOT_FOUND", f"Registration {registration_id} not found")


async def _json_object(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return sinch_error(400, "INVALID_ARGUMENT", "The body is not valid JSON")
    if not isinstance(body, dict):
        return sinch_error(400, "INVALID_ARGUMENT", "The body must be a JSON object")
    return body


def _sender_ids(request_details: object) -> tuple[list[str], list[Violation]]:
    """Every `senderId` of `requestDetails[].senderIdDetails[]`, and what is malformed there."""
    found: list[str] = []
    violations: list[Violation] = []
    if not isinstance(request_details, list):
        return found, violations
    for i, entry in enumerate(request_details):
        details = entry.get("senderIdDetails", []) if isinstance(entry, dict) else None
        if not isinstance(details, list):
            violations.append(
                {
                    "field": f"requestDetails[{i}]",
                    "description": "must be an object with a senderIdDetails array",
                }
            )
            continue
        for j, item in enumerate(details):
            sender_id = item.get("senderId") if isinstance(item, dict) else None
            if isinstance(sender_id, str) and sender_id:
                found.append(sender_id)
            elif sender_id is not None or not isinstance(item, dict):
                violations.append(
                    {
                        "field": f"requestDetails[{i}].senderIdDetails[{j}].senderId",
                        "description": "must be a non-empty string",
                    }
                )
    return found, violations


def check_create(body: dict[str, Any]) -> list[Violation]:
    """What Sinch would refuse in a create's top-level fields (empty: nothing)."""
    violations: list[Violation] = [
        {"field": name, "description": "is required"} for name in REQUIRED if body.get(name) is None
    ]
    violations += [
        {"field": name, "description": "must be an array"}
        for name in LISTS
        if body.get(name) is not None and not isinstance(body[name], list)
    ]
    kind = body.get("registrationType")
    if kind is not None and kind not in REGISTRATION_TYPES:
        violations.append(
            {"field": "registrationType", "description": f"unknown registration type {kind!r}"}
        )
    market = body.get("marketCode")
    if market is not None and not any(
        v["marketCode"] == market and v["registrationType"] == kind for v in MARKET_VERSIONS
    ):
        violations.append(
            {"field": "marketCode", "description": f"unknown market {market!r} for {kind}"}
        )
    policy_id = body.get("policyId")
    policy = POLICIES.get(policy_id) if isinstance(policy_id, str) else None
    if policy_id is not None and policy is None:
        violations.append({"field": "policyId", "description": f"unknown policy {policy_id!r}"})
    elif policy is not None:
        if policy.registration_type not in (None, kind):
            violations.append(
                {
                    "field": "policyId",
                    "description": f"policy {policy.id} is for {policy.registration_type}",
                }
            )
        if market is not None and policy.market_code not in (None, market):
            violations.append(
                {"field": "policyId", "description": f"policy {policy.id} is not for {market}"}
            )
    sender_ids, malformed = _sender_ids(body.get("requestDetails"))
    violations += malformed
    if policy is not None and policy.multi_type == "SINGLE" and len(sender_ids) > 1:
        violations.append(
            {"field": "requestDetails", "description": f"policy {policy.id} allows one sender ID"}
        )
    return violations


def install_registration_writes(
    app: FastAPI, state: SimulatorState, guard: Callable[[str], Any]
) -> None:
    """Add the write routes to the simulator `app` over `state`; `guard(stat)` is the
    simulator's dependency of every public route (faults, the bearer token, the project)."""
    base = "/v1/projects/{projectId}/registrations"

    @app.post(base, dependencies=[guard("createRegistration")])
    async def create_registration(request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        violations = check_create(body)
        if violations:
            return _invalid(violations)
        sender_ids, _ = _sender_ids(body["requestDetails"])
        policy = POLICY_DOCUMENTS.get(body["policyId"]) or {}
        mandatory = any(
            isinstance(a, dict) and a.get("mandatory") is True
            for a in policy.get("attachments") or []
        )
        try:
            document = state.create(
                registration_type=body["registrationType"],
                policy_id=body["policyId"],
                # As Sinch documents it: held until its mandatory attachments are uploaded
                # (devtools/simulator/attachments.py moves it on).
                status="PENDING_ATTACHMENTS" if mandatory else None,
                callback_url=body.get("callbackUrl"),
                tags=body.get("tags") or [],
                sender_ids=sender_ids or None,
            )
        except SimulatorInputError as exc:
            return sinch_error(400, "INVALID_ARGUMENT", str(exc))
        kept = state.registrations[document["id"]].document
        kept["notificationContacts"] = copy.deepcopy(body.get("notificationContacts") or [])
        if sender_ids:  # the caller's details as sent (use cases and all)
            kept["requestDetails"] = copy.deepcopy(body["requestDetails"])
        return JSONResponse(state.get(document["id"]))

    @app.put(f"{base}/{{registrationId}}", dependencies=[guard("updateRegistration")])
    async def update_registration(registration_id: RegistrationId, request: Request) -> Response:
        found = state.registrations.get(registration_id)
        if found is None:
            return _not_found(registration_id)
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        if found.status in DECIDED:
            return sinch_error(
                400,
                "FAILED_PRECONDITION",
                f"Registration {registration_id} is {found.status} and cannot be updated",
            )
        document = found.document
        violations = [
            {"field": name, "description": "cannot be changed"}
            for name in ("registrationType", "policyId")
            if body.get(name) is not None and body[name] != document.get(name)
        ]
        violations += [
            {"field": name, "description": "must be an array"}
            for name in LISTS
            if body.get(name) is not None and not isinstance(body[name], list)
        ]
        sender_ids, malformed = _sender_ids(body.get("requestDetails"))
        violations += malformed
        if violations:
            return _invalid(violations)
        for name in (*LISTS, "callbackUrl"):
            if name in body:
                document[name] = copy.deepcopy(body[name])
        if "tags" in body:
            found.tags = list(body["tags"] or [])
        if sender_ids:
            found.sender_ids = tuple(sender_ids)
        if found.status in ANSWERED:
            state.transition(registration_id, "IN_QUEUE", comment="Registration updated")
        else:
            when = state.now().astimezone(UTC).replace(tzinfo=None, microsecond=0)
            previous = document.get("updateTime")
            if isinstance(previous, str):
                when = max(when, parse_time(previous) + timedelta(seconds=1))
            document["updateTime"] = format_time(when)
        return JSONResponse(state.get(registration_id))

    @app.delete(f"{base}/{{registrationId}}", dependencies=[guard("deleteRegistration")])
    async def delete_registration(registration_id: RegistrationId) -> Response:
        if state.registrations.pop(registration_id, None) is None:
            return _not_found(registration_id)
        for key in [k for k in state.attachment_files if k[0] == registration_id]:
            del state.attachment_files[key]
        return Response(status_code=204)
