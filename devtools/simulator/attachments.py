"""The simulator's attachment routes, as Sinch's overview names them (docs/sinch.md): upload
(`POST /registrations/{id}/attachments/{attachmentId}`, a multipart body with the file in part
`file`) and download (`GET` of the same path, the file as uploaded).

An upload is checked as Sinch would: the registration exists and is not decided (APPROVED,
REJECTED: 400 `FAILED_PRECONDITION`), the attachment is one its policy defines, the file is there,
not empty, at most `MAX_FILE_BYTES`, of one of the definition's `allowedMimeTypes`; a refusal
answers Sinch's error body with the fields at fault. An accepted upload replaces any earlier file
of that attachment, is listed in the document's `attachments[]` (`uploadStatus` `COMPLETED`) and
bumps its `updateTime`; the upload that completes the policy's mandatory attachments of a
registration in PENDING_ATTACHMENTS moves it to IN_QUEUE (a callback, as every move). It answers
the attachment entry. Files are kept in memory (`SimulatorState.attachment_files`).

The part's name (`file`) and the answer's shape are this simulator's reading: Sinch does not
document them (the service's client keeps its guess in one place, `ATTACHMENT_FIELD`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from devtools.simulator.state import SimulatorState, format_time, parse_time, policy_document
from devtools.simulator.writes import DECIDED, sinch_error

FILE_PART = "file"
MAX_FILE_BYTES = 10 * 1024 * 1024
"""The largest file the simulated Sinch takes (Sinch's own limit is not documented)."""
ATTACHMENTS_RECEIVED = "Attachments received"

RegistrationId = Annotated[str, Path(alias="registrationId")]
AttachmentId = Annotated[str, Path(alias="attachmentId")]


def policy_of(state: SimulatorState, policy_id: object) -> dict[str, Any] | None:
    """The policy as this project's simulated Sinch serves it now (a revision included)."""
    if not isinstance(policy_id, str):
        return None
    return state.catalog.revised(policy_id) or policy_document(policy_id)


def definitions(policy: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The policy's attachment definitions by id."""
    found = (policy or {}).get("attachments") or []
    return {a["id"]: a for a in found if isinstance(a, dict) and isinstance(a.get("id"), str)}


def missing_mandatory(state: SimulatorState, document: dict[str, Any]) -> list[str]:
    """The mandatory attachments of the registration's policy not uploaded yet, in the policy's
    order."""
    uploaded = {
        a.get("attachmentId") for a in document.get("attachments") or [] if isinstance(a, dict)
    }
    return [
        attachment_id
        for attachment_id, definition in definitions(
            policy_of(state, document.get("policyId"))
        ).items()
        if definition.get("mandatory") is True and attachment_id not in uploaded
    ]


def _violation(field: str, description: str) -> JSONResponse:
    return sinch_error(
        400,
        "INVALID_ARGUMENT",
        "Invalid attachment",
        [{"field": field, "description": description}],
    )


def install_attachment_routes(
    app: FastAPI, state: SimulatorState, guard: Callable[[str], Any]
) -> None:
    """Add the routes of the module docstring to the simulator `app` over `state`; `guard(stat)`
    is the simulator's dependency of every public route (faults, the bearer token, the project)."""
    path = "/v1/projects/{projectId}/registrations/{registrationId}/attachments/{attachmentId}"

    @app.post(path, dependencies=[guard("uploadAttachment")])
    async def upload_attachment(
        registration_id: RegistrationId, attachment_id: AttachmentId, request: Request
    ) -> Response:
        found = state.registrations.get(registration_id)
        if found is None:
            return sinch_error(404, "NOT_FOUND", f"Registration {registration_id} not found")
        if found.status in DECIDED:
            return sinch_error(
                400,
                "FAILED_PRECONDITION",
                f"Registration {registration_id} is {found.status}: attachments cannot change",
            )
        document = found.document
        definition = definitions(policy_of(state, document.get("policyId"))).get(attachment_id)
        if definition is None:
            return _violation("attachmentId", f"the policy defines no attachment {attachment_id}")
        try:
            form = await request.form()
        except Exception:  # the parser's errors vary; any unreadable body is the caller's
            return _violation(FILE_PART, "the body must be multipart/form-data")
        upload = form.get(FILE_PART)
        if not isinstance(upload, UploadFile):
            return _violation(FILE_PART, "is required (a file part)")
        content = await upload.read()
        mime = upload.content_type or "application/octet-stream"
        allowed = definition.get("allowedMimeTypes") or []
        if not content:
            return _violation(FILE_PART, "is empty")
        if len(content) > MAX_FILE_BYTES:
            return _violation(FILE_PART, f"exceeds {MAX_FILE_BYTES} bytes")
        if allowed and mime not in allowed:
            return _violation(FILE_PART, f"must be one of {', '.join(allowed)}")
        when = state.now().astimezone(UTC).replace(tzinfo=None, microsecond=0)
        previous = document.get("updateTime")
        if isinstance(previous, str):
            when = max(when, parse_time(previous) + timedelta(seconds=1))
        stamp = format_time(when)
        file_name = upload.filename or attachment_id
        listed = [
            a
            for a in document.get("attachments") or []
            if not (isinstance(a, dict) and a.get("attachmentId") == attachment_id)
        ]
        entry = {
            "attachmentId": attachment_id,
            "fileName": file_name,
            "mimeType": mime,
            "createTime": stamp,
            "updateTime": stamp,
            "uploadStatus": "COMPLETED",
            "documentType": mime.rpartition("/")[2].upper(),
        }
        document["attachments"] = [*listed, entry]
        document["updateTime"] = stamp
        state.attachment_files[(registration_id, attachment_id)] = (file_name, mime, content)
        if found.status == "PENDING_ATTACHMENTS" and not missing_mandatory(state, document):
            state.transition(registration_id, "IN_QUEUE", comment=ATTACHMENTS_RECEIVED)
        return JSONResponse(entry)

    @app.get(path, dependencies=[guard("downloadAttachment")])
    async def download_attachment(
        registration_id: RegistrationId, attachment_id: AttachmentId
    ) -> Response:
        kept = (
            state.attachment_files.get((registration_id, attachment_id))
            if registration_id in state.registrations
            else None
        )
        if kept is None:
            return sinch_error(
                404,
                "NOT_FOUND",
                f"Attachment {attachment_id} of registration {registration_id} not found",
            )
        file_name, mime, content = kept
        # The name as a header can carry it: printable ASCII, no quote or backslash.
        shown = "".join(c for c in file_name if c.isascii() and c.isprintable() and c not in '"\\')
        return Response(
            content,
            media_type=mime,
            headers={"Content-Disposition": f'attachment; filename="{shown or attachment_id}"'},
        )
