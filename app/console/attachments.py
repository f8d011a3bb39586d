"""A registration's attachments as its console page shows them: each attachment its policy
defines (title, mandatory, the MIME types it takes) beside what Sinch's document lists as
uploaded, and what an upload form posted, read into the service's `Upload`. No route here: the
upload and download routes are the registration page's (app/console/registrations.py), and they
go through `app.submissions.service` (`check_attachment`, `attach`, `open_attachment`), as the
API's do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from app.core.problems import ProblemError
from app.submissions.service import Upload

FILE_FIELD = "file"
"""The upload form's file input (the API's multipart part has the same name)."""
NOT_UPLOADABLE = frozenset({"DELETED"})
"""The states whose page offers no upload form: a registration deleted here is gone at Sinch.
Every other state gets one; Sinch refuses what it will not take (a decided registration), and the
refusal is shown beside the form."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment the registration's policy defines, and its upload as Sinch lists it."""

    id: str
    title: str
    mandatory: bool
    mime_types: tuple[str, ...]
    """The definition's `allowedMimeTypes`; empty: any type."""
    uploaded: Mapping[str, Any] | None
    """Sinch's `attachments[]` entry for it (`fileName`, `uploadStatus`, `updateTime`, ...);
    None when Sinch lists no upload of it."""
    refusal: str | None = None
    """Why the upload just posted for it was refused (nothing sent), to show beside its form."""


def listed(
    policy: Mapping[str, Any] | None,
    document: Mapping[str, Any] | None,
    refused: tuple[str, str] | None = None,
) -> list[Attachment]:
    """The attachments `policy` (its document) defines, in its order, each with its entry of
    the registration's `document` (Sinch's) and, for `refused` (attachment id, reason), the
    reason. Empty when there is no policy or it defines none."""
    uploads = {
        a["attachmentId"]: a
        for a in (document or {}).get("attachments") or []
        if isinstance(a, dict) and isinstance(a.get("attachmentId"), str)
    }
    found: list[Attachment] = []
    for definition in (policy or {}).get("attachments") or []:
        if not isinstance(definition, dict) or not isinstance(definition.get("id"), str):
            continue
        attachment_id = definition["id"]
        types = definition.get("allowedMimeTypes") or []
        found.append(
            Attachment(
                id=attachment_id,
                title=str(definition.get("title") or attachment_id),
                mandatory=definition.get("mandatory") is True,
                mime_types=tuple(t for t in types if isinstance(t, str)),
                uploaded=uploads.get(attachment_id),
                refusal=refused[1] if refused and refused[0] == attachment_id else None,
            )
        )
    return found


async def posted_upload(request: Request, attachment_id: str) -> Upload:
    """The file the upload form posted, with the MIME type the browser declared for it. No file
    chosen reads as an empty file (named after the attachment), which `check_attachment`
    refuses as such."""
    form = await request.form()
    file = form.get(FILE_FIELD)
    if not isinstance(file, UploadFile) or not file.filename:
        return Upload(file_name=attachment_id, mime_type="application/octet-stream", content=b"")
    return Upload(
        file_name=file.filename,
        mime_type=file.content_type or "application/octet-stream",
        content=await file.read(),
    )


def refusal_of(problem: ProblemError) -> str:
    """`check_attachment`'s refusal in the console's words: the messages of its `errors` (the
    API's detail points to them), else its detail; nothing was sent."""
    errors = (problem.extra or {}).get("errors")
    messages = [
        e["message"]
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict) and isinstance(e.get("message"), str)
    ]
    return f"{' '.join(messages) or problem.detail or problem.title} Nothing was sent."


def disposition(sinch_says: str | None) -> str:
    """The download's `Content-Disposition`: Sinch's when it is an `attachment` one, else plain
    `attachment`, so that a browser saves the file and never shows it inside the console."""
    if sinch_says and sinch_says.strip().lower().startswith("attachment"):
        return sinch_says
    return "attachment"
