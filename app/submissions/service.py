"""Writing registrations at Sinch: create, update, delete (issue 27). The API and the command line
come here; neither has another way in.

Sinch's answer is the truth (docs/architecture.md): the local copy is written from Sinch's answer,
never from the request, through the one write path every source takes (`apply_snapshot`, history
source `submitted`), in the transaction that audits the write, so the change feed and the
subscriptions see it at once. Each Sinch call is made with no transaction open, with the
credentials of the registration's project. The caller pokes its sequencer (or numbers the
changes) after these return: what they changed goes on the feed.

The caller's request and Sinch's body: callers of POST and PUT send Sinch's create or update body
(`requestDetails` and Sinch's top-level fields), THE layout, passed to Sinch as sent (with this
service's `callbackUrl`); the check's own layout (`companyDetails`, `contactPerson`, `senderIds`
at the top level: what the console's form builds) is taken too, and laid out as Sinch's before
sending. `check_policy` reads either (app/catalog/layout.py, the one place that knows where
the content sits in Sinch's body), checks it against its policy before anything is sent, and
answers each error at its path in the body the caller sent.

Attachments (`check_attachment`, `attach`, `open_attachment`): a file is checked against its
registration's policy (the attachment is one the policy defines, of one of its `allowedMimeTypes`,
not empty, at most `ATTACHMENT_MAX_BYTES`) before it is sent; after the upload the registration is
fetched again and applied, so its `attachments[]` shows the file. A download streams Sinch's answer.

Which Sinch failures answer what (`ProblemError`): a 4xx is 422 with Sinch's own error object
under `sinch` (what to fix); a 404 of an update or a delete is 404; a 5xx or 429 is 502; no answer
in time is 504 (a create may then exist at Sinch: it arrives with its callback or the next
reconciliation); an answer that is not a registration is 502.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.actions import Action
from app.audit.repository import Actor, record
from app.callbacks.endpoint import project_callback_path
from app.catalog import layout
from app.catalog import queries as catalog_queries
from app.catalog.check import CheckResult, FieldError
from app.catalog.schemas import FieldErrorOut
from app.catalog.service import check_request, invalid_request
from app.core.db import utcnow
from app.core.models import HistorySource, Registration
from app.core.problems import ProblemError
from app.core.settings import Settings
from app.registrations import queries
from app.registrations.service import apply_answer
from app.sinch.client import SinchClient
from app.sinch.errors import (
    SinchError,
    SinchNotFoundError,
    SinchRejectedError,
    SinchRetryableError,
    SinchTimeoutError,
)
from app.sinch.schemas import SinchRegistration

log = logging.getLogger(__name__)

DELETED = "DELETED"
"""The local status of a registration deleted through this service. Sinch's documents have no
such state (a deleted registration is simply gone there); the local copy keeps the registration
with this status, so the feed tells its readers and the history keeps its life."""

CALLBACK_URL_FIELD = "callbackUrl"


@dataclass(frozen=True, slots=True)
class Checked:
    """A request that meets its policy: the check's answer, and the body to send Sinch."""

    result: CheckResult
    document: dict[str, Any]
    """Sinch's create or update body (`layout.Read.sinch`), before `with_callback`."""


async def check_policy(
    session: AsyncSession,
    project_id: str,
    body: Mapping[str, Any],
    *,
    policy_id: str | None = None,
) -> Checked:
    """Check the caller's request `body` (Sinch's layout or the check's: `layout.read`) against
    its policy in project `project_id`'s catalog (app/catalog/check.py): the body's `policyId`,
    else `policy_id` (an update: the registration's). Answers the check's result and Sinch's
    body when the request meets the policy; raises the 422 problem with one entry per field
    (`catalog.service.invalid_request`) when it does not, a disabled policy included (its entry
    is Sinch's disclaimer). Each entry's path is into `body` as the caller sent it; the
    layout's own errors come first. A body mixing both layouts is refused with one entry."""
    read = layout.read(body)
    asked = dict(read.members)
    if asked.get("policyId") is None and policy_id is not None:
        asked["policyId"] = policy_id
    result = await check_request(session, project_id, asked)
    if read.mixed:
        result.errors = list(read.errors)
    else:
        result.errors = read.errors + [
            replace(error, path=read.path_sent(error.path)) for error in result.errors
        ]
    if not result.valid:
        raise invalid_request(result)
    return Checked(result, read.sinch)


def callback_url(settings: Settings, project_id: str) -> str:
    """Where Sinch must send project `project_id`'s callbacks: `PUBLIC_BASE_URL` + its callback
    path. A 503 problem when `PUBLIC_BASE_URL` is not set: a registration submitted without a
    callback URL would never tell this service anything."""
    if settings.public_base_url is None:
        raise ProblemError(
            503,
            "Submitting is refused: PUBLIC_BASE_URL (this service's URL as Sinch reaches it) is "
            "not set, so Sinch could not send this registration's callbacks here.",
        )
    return settings.public_base_url + project_callback_path(project_id)


def with_callback(body: dict[str, Any], settings: Settings, project_id: str) -> dict[str, Any]:
    """`body` as sent to Sinch: the caller's fields, and this service's callback URL."""
    if CALLBACK_URL_FIELD in body:
        raise ProblemError(
            422,
            "`callbackUrl` is set by this service (PUBLIC_BASE_URL and the project's callback "
            "path): leave it out.",
        )
    return {**body, CALLBACK_URL_FIELD: callback_url(settings, project_id)}


async def submit(
    sessionmaker: async_sessionmaker[AsyncSession],
    sinch: SinchClient,
    body: dict[str, Any],
    *,
    actor: Actor,
) -> Registration:
    """Create the registration at Sinch (`body` with its `callbackUrl`, see `with_callback`) and
    keep Sinch's answer as the local copy; answers the registration as kept."""
    return await _written(
        sessionmaker,
        sinch,
        lambda: sinch.create_registration(body),
        operation="create",
        actor=actor,
        action=Action.REGISTRATION_SUBMIT,
    )


async def update(
    sessionmaker: async_sessionmaker[AsyncSession],
    sinch: SinchClient,
    registration_id: str,
    body: dict[str, Any],
    *,
    actor: Actor,
) -> Registration:
    """PUT the registration's new content at Sinch (`body` with its `callbackUrl`) and apply
    Sinch's answer; answers the registration as kept (a callback applied meanwhile that is newer
    than Sinch's answer stands, as always)."""
    return await _written(
        sessionmaker,
        sinch,
        lambda: sinch.update_registration(registration_id, body),
        operation="update",
        actor=actor,
        action=Action.REGISTRATION_UPDATE,
    )


async def update_checked(
    sessionmaker: async_sessionmaker[AsyncSession],
    sinch: SinchClient,
    registration: Registration,
    body: Mapping[str, Any],
    settings: Settings,
    *,
    actor: Actor,
) -> Registration:
    """`check_policy` (the body's policy, else the registration's), then `update` with the
    `callbackUrl` of the registration's project: an update as the API and the command line make
    it. Nothing is sent when the check refuses (its 422)."""
    project_id = registration.project_id
    async with sessionmaker() as session:
        checked = await check_policy(session, project_id, body, policy_id=registration.policy_id)
    document = with_callback(checked.document, settings, project_id)
    return await update(sessionmaker, sinch, registration.id, document, actor=actor)


async def _written(
    sessionmaker: async_sessionmaker[AsyncSession],
    sinch: SinchClient,
    call: Callable[[], Awaitable[SinchRegistration]],
    *,
    operation: str,
    actor: Actor,
    action: Action,
) -> Registration:
    """Make the write `call` at Sinch (no transaction open), then keep its answer (`_keep`)."""
    fetched_at = utcnow()
    async with _sinch_answers(operation):
        snapshot = await call()
    return await _keep(sessionmaker, sinch, snapshot, fetched_at, actor=actor, action=action)


async def delete(
    sessionmaker: async_sessionmaker[AsyncSession],
    sinch: SinchClient,
    registration: Registration,
    *,
    actor: Actor,
) -> Registration:
    """DELETE the registration at Sinch, then keep it here with status `DELETED` (its last
    document otherwise). A 404 from Sinch means it is gone there already: kept as deleted too."""
    fetched_at = utcnow()
    try:
        async with _sinch_answers("delete"):
            await sinch.delete_registration(registration.id)
    except ProblemError as exc:
        if exc.status != 404:
            raise
        log.info(
            "delete: Sinch has no such registration; kept as deleted",
            extra={"registration_id": registration.id},
        )
    document = {**(registration.sinch or {}), "id": registration.id, "status": DELETED}
    # Sinch sends no document for a deletion: without `updateTime`, the change's time is ours
    # (when the DELETE began), never a time Sinch did not say.
    document.pop("updateTime", None)
    snapshot = SinchRegistration.from_document(document)
    return await _keep(
        sessionmaker, sinch, snapshot, fetched_at, actor=actor, action=Action.REGISTRATION_DELETE
    )


@dataclass(frozen=True, slots=True)
class Upload:
    """A file to attach: its name, its MIME type as the uploader declared it, its bytes."""

    file_name: str
    mime_type: str
    content: bytes


def _attachment_refusal(path: str, rule: str, message: str) -> ProblemError:
    entry = FieldErrorOut.of(FieldError(path, rule, message))
    return ProblemError(
        422,
        "The attachment does not meet its policy; see `errors`.",
        extra={"errors": [entry.model_dump(mode="json", by_alias=True)]},
    )


async def check_attachment(
    session: AsyncSession,
    registration: Registration,
    attachment_id: str,
    upload: Upload,
    *,
    max_bytes: int,
) -> None:
    """Refuse (`ProblemError`) an upload the registration's policy would not take: 413 above
    `max_bytes` (`ATTACHMENT_MAX_BYTES`); 422 with one entry in `errors` for a policy the
    project's catalog lacks (`$.policyId`), an attachment id the policy does not define
    (`$.attachmentId`), an empty file or a MIME type outside the definition's
    `allowedMimeTypes` (`$.file`; a definition without that list takes any)."""
    if len(upload.content) > max_bytes:
        raise ProblemError(413, f"The file exceeds {max_bytes} bytes (ATTACHMENT_MAX_BYTES).")
    policy = (
        await catalog_queries.policy(
            session, registration.policy_id, frozenset({registration.project_id})
        )
        if registration.policy_id
        else None
    )
    if policy is None:
        raise _attachment_refusal(
            "$.policyId",
            "known",
            "The registration's policy is not in this project's catalog: refresh the catalog "
            "(python -m app catalog refresh), or see the registration's policyId.",
        )
    definitions = {
        a["id"]: a
        for a in policy.document.get("attachments") or []
        if isinstance(a, dict) and isinstance(a.get("id"), str)
    }
    definition = definitions.get(attachment_id)
    if definition is None:
        known = ", ".join(sorted(definitions)) or "(this policy takes none)"
        raise _attachment_refusal(
            "$.attachmentId", "enum", f"Not an attachment of this policy; it takes: {known}."
        )
    if not upload.content:
        raise _attachment_refusal("$.file", "minLength", "The file is empty.")
    allowed = [t for t in definition.get("allowedMimeTypes") or [] if isinstance(t, str)]
    if allowed and upload.mime_type not in allowed:
        raise _attachment_refusal(
            "$.file", "enum", f"The file's type must be one of: {', '.join(allowed)}."
        )


async def attach_checked(
    sessionmaker: async_sessionmaker[AsyncSession],
    sinch: SinchClient,
    registration: Registration,
    attachment_id: str,
    upload: Upload,
    *,
    max_bytes: int,
    actor: Actor,
) -> Registration:
    """`check_attachment`, then `attach`: an upload as the API and the command line make it.
    Nothing is sent when the check refuses (its 413 or 422)."""
    async with sessionmaker() as session:
        await check_attachment(session, registration, attachment_id, upload, max_bytes=max_bytes)
    return await attach(sessionmaker, sinch, registration.id, attachment_id, upload, actor=actor)


async def attach(
    sessionmaker: async_sessionmaker[AsyncSession],
    sinch: SinchClient,
    registration_id: str,
    attachment_id: str,
    upload: Upload,
    *,
    actor: Actor,
) -> Registration:
    """Upload `upload` as attachment `attachment_id` of the registration at Sinch (checked by
    `check_attachment` first: this does not check), then GET the registration and apply it
    (history source `submitted`), audited as `registration.attach`; answers the registration as
    kept, its document's `attachments[]` showing the upload."""
    fetched_at = utcnow()
    async with _sinch_answers("upload"):
        await sinch.upload_attachment(
            registration_id,
            attachment_id,
            file_name=upload.file_name,
            mime_type=upload.mime_type,
            content=upload.content,
        )
        snapshot = await sinch.get_registration(registration_id)
    return await _keep(
        sessionmaker,
        sinch,
        snapshot,
        fetched_at,
        actor=actor,
        action=Action.REGISTRATION_ATTACH,
        detail={
            "attachmentId": attachment_id,
            "fileName": upload.file_name,
            "mimeType": upload.mime_type,
            "bytes": len(upload.content),
        },
    )


@asynccontextmanager
async def open_attachment(
    sinch: SinchClient, registration_id: str, attachment_id: str
) -> AsyncIterator[httpx.Response]:
    """Sinch's answer to a download of the attachment, streamed (read it while the context is
    open). Sinch's failures to answer are the problems of the module docstring (404 when Sinch
    has no such registration or attachment); a failure while the body streams is raised as the
    client raises it."""
    async with AsyncExitStack() as stack:
        async with _sinch_answers("download"):
            response = await stack.enter_async_context(
                sinch.open_attachment(registration_id, attachment_id)
            )
        yield response


@dataclass(frozen=True, slots=True)
class Download:
    """An attachment's download, open: Sinch's headers, and its body as `chunks`, which close
    the answer once read. A response that streams `chunks` runs `close` when it is done too:
    the caller may leave before the end (closing twice is harmless)."""

    headers: httpx.Headers
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


async def download(sinch: SinchClient, registration_id: str, attachment_id: str) -> Download:
    """`open_attachment`, kept open past this call for a streamed answer (the API's download and
    the console's). Sinch's failures to answer are raised here, as `open_attachment` raises them."""
    stack = AsyncExitStack()
    answer = await stack.enter_async_context(open_attachment(sinch, registration_id, attachment_id))

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.aiter_bytes():
                yield chunk
        finally:
            await stack.aclose()

    return Download(answer.headers, chunks(), stack.aclose)


async def _keep(
    sessionmaker: async_sessionmaker[AsyncSession],
    sinch: SinchClient,
    snapshot: SinchRegistration,
    fetched_at: datetime,
    *,
    actor: Actor,
    action: Action,
    detail: dict[str, Any] | None = None,
) -> Registration:
    """Apply Sinch's answer (source `submitted`) and audit `action` (with `detail` beside the
    status), in one transaction."""
    async with sessionmaker.begin() as session:
        await apply_answer(
            session, sinch, snapshot, source=HistorySource.SUBMITTED, fetched_at=fetched_at
        )
        record(
            session,
            actor,
            action,
            snapshot.id,
            now=utcnow(),
            project_id=sinch.project_id,
            detail={"status": snapshot.status, **(detail or {})},
        )
        registration = await queries.get_registration(session, snapshot.id)
    if registration is None:  # applied just above; only a concurrent delete could do this
        raise ProblemError(404, "No registration with this id is known here.")
    log.info("registration %s", action.value, extra={"registration_id": snapshot.id})
    return registration


@asynccontextmanager
async def _sinch_answers(operation: str) -> AsyncIterator[None]:
    """Turn the Sinch client's failures during a write into the problems of the module docstring.
    Sinch's own error object (a 4xx) is passed on; the client's messages (Sinch's URLs) are not."""
    try:
        yield
    except SinchRejectedError as exc:
        if isinstance(exc, SinchNotFoundError) and operation != "create":
            what = (
                "registration"
                if operation in ("update", "delete")
                else "registration or attachment"
            )
            raise ProblemError(404, f"Sinch has no such {what}.") from None
        raise ProblemError(
            422,
            f"Sinch refused the {operation} (it answered {exc.status_code}); see `sinch` for "
            "what it said.",
            extra={"sinch": exc.error or {"code": exc.status_code}},
        ) from None
    except SinchTimeoutError:
        log.warning("%s: Sinch did not answer in time", operation)
        maybe = (
            " The registration may have been created: it appears here with its first callback "
            "or the next reconciliation."
            if operation == "create"
            else ""
        )
        raise ProblemError(504, f"Sinch did not answer the {operation} in time.{maybe}") from None
    except SinchRetryableError as exc:
        log.warning("%s: Sinch unavailable (%s)", operation, exc.status_code or "no answer")
        headers = (
            {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
            if exc.retry_after is not None
            else None
        )
        raise ProblemError(
            502,
            f"Sinch is unavailable ({exc.status_code or 'no answer'}); try again later.",
            headers=headers,
        ) from None
    except SinchError as exc:
        log.warning("%s: Sinch answer unusable (%s)", operation, type(exc).__name__)
        raise ProblemError(502, "Sinch answered something this service cannot use.") from None
