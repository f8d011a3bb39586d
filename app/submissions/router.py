"""Writes of registrations through the internal API (`POST`, `PUT`, `DELETE` under
`/v1/registrations`, write scope). HTTP only: parse, resolve the project, call the service, answer.

Every create and update is checked against its policy (`service.check_policy`, app/catalog) before
anything is sent or a key claimed: a refused request is 422 with one entry per field (at its path
in the body as sent) and keeps nothing. The body is Sinch's create or update body, sent as it
is; the check's layout is taken too and laid out as Sinch's (app/catalog/layout.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Body, Depends, File, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from app.catalog.schemas import CheckOut
from app.changes.live import SequencerDep
from app.core.models import Registration
from app.core.problems import ProblemError
from app.core.schemas import problem_responses
from app.projects.clients import ProjectClients, ProjectClientsDep
from app.projects.queries import get_project
from app.registrations import queries
from app.registrations.router import RegistrationId, answers
from app.registrations.schemas import RegistrationOut
from app.sinch.client import SinchClient
from app.submissions import service
from app.tokens.principal import Principal
from app.web.auth import ActorDep, PrincipalDep, WriterDep, api_router, require_write
from app.web.deps import Resources, ResourcesDep
from app.web.idempotency import IdempotencyKeyHeader, idempotent

router = api_router("/v1/registrations", "registrations", guard=require_write)
reader = api_router("/v1/registrations", "registrations")
"""The download of an attachment: scope `read`."""

PROJECT_FIELD = "projectId"
_ERRORS = problem_responses(403, 404, 422, 502, 503, 504)
_POST_ERRORS = problem_responses(403, 404, 409, 422, 502, 503, 504)
"""A POST also answers 409: its `Idempotency-Key` is still in flight."""

SinchBody = Annotated[
    dict[str, Any],
    Body(
        description="The registration as Sinch's create (or update) body: its top-level fields "
        "(`registrationType`, `policyId`, `tags`, `notificationContacts`, ...) and "
        "`requestDetails: [{senderIdDetails: [...], additionalDetails: [{companyDetails, "
        "contactPerson}]}]`, the sender IDs following the policy's `senderIdTemplate`; sent to "
        "Sinch as it is. Also taken: the policy check's layout, `companyDetails`, "
        "`contactPerson`, `senderIds` at the top level (and optionally `attachments`, "
        "`[{attachmentId, mimeType}]`, the uploads to come), laid out as Sinch's before "
        "sending; a body mixing both is refused (docs/api.md). Never `callbackUrl`, which the "
        "service sets. For a create, `projectId` names the project where several exist "
        "(default: the token's only project, else the project the settings define; removed "
        "before sending); for an update, `policyId` defaults to the registration's.",
    ),
]


async def _client(clients: ProjectClients, project_id: str) -> SinchClient:
    sinch = await clients.client(project_id)
    if sinch is None:
        raise ProblemError(
            503, f"Project {project_id} has no usable Sinch credentials here (see `project show`)."
        )
    return sinch


async def _known(
    resources: Resources, clients: ProjectClients, registration_id: str, principal: Principal
) -> tuple[Registration, SinchClient]:
    """The local registration, when the token may see its project (else 404, as a missing one),
    and its project's Sinch client."""
    async with resources.reader() as session:
        registration = await queries.get_registration(session, registration_id, principal.projects)
    if registration is None:
        raise ProblemError(404, "No registration with this id is known here.")
    return registration, await _client(clients, registration.project_id)


@dataclass(frozen=True, slots=True)
class Write:
    """What every write route takes (a FastAPI dependency): the request's resources, the
    projects' Sinch clients, the sequencer, the `write` token and its audit actor; with the steps
    the routes share around their service call. Resolving it checks the token only: a route finds
    its project or registration itself, after FastAPI has checked the request (a malformed body
    is 422 before any 404)."""

    resources: ResourcesDep
    clients: ProjectClientsDep
    sequencer: SequencerDep
    principal: WriterDep
    actor: ActorDep

    async def project_of(self, named: object) -> str:
        """The project a new registration is submitted to: `named`, else the token's only
        project, else the settings' project. 404 when it is not a project here or not among the
        token's."""
        if named is not None and not isinstance(named, str):
            raise ProblemError(422, "`projectId` must be a string.")
        project_id = named
        if project_id is None:
            limit = self.principal.projects
            only = next(iter(limit)) if limit is not None and len(limit) == 1 else None
            project_id = only or self.resources.settings.settings_project_id
        async with self.resources.reader() as session:
            project = await get_project(session, project_id, self.principal.projects)
        if project is None:
            raise ProblemError(404, "No project with this id is known here.")
        return project_id

    async def client(self, project_id: str) -> SinchClient:
        """Project `project_id`'s Sinch client; 503 when it has no usable credentials."""
        return await _client(self.clients, project_id)

    async def known(self, registration_id: str) -> tuple[Registration, SinchClient]:
        """The registration written to, when the token may see its project (else 404, as a
        missing one), and its project's Sinch client."""
        return await _known(self.resources, self.clients, registration_id, self.principal)

    async def answer(self, registration: Registration) -> RegistrationOut:
        """The answer to a write: the change it made goes on the feed (the sequencer numbers
        it), and the registration as kept is answered as a GET would answer it."""
        self.sequencer.poke()
        async with self.resources.reader() as session:
            [answer] = await answers(session, [registration])
        return answer


WriteDep = Annotated[Write, Depends()]


@router.post(
    "",
    status_code=201,
    operation_id="submitRegistration",
    summary="Submit a new registration to Sinch",
    description="Creates the registration at Sinch with `callbackUrl` = `PUBLIC_BASE_URL` + its "
    "project's callback path, and keeps Sinch's answer as the local copy (history source "
    "`submitted`; on the change feed at once). Checked against its policy first: a request the "
    "policy refuses is 422 with `errors` (one per field: `field`, its JSON path in the body as "
    "sent, `rule`, `message`), nothing sent or kept. Honours "
    "`Idempotency-Key` (24 hours). Sinch's refusal is 422 with its error under `sinch`; Sinch "
    "unavailable 502, silent 504; `PUBLIC_BASE_URL` unset or the project without credentials 503.",
    response_model=RegistrationOut,
    responses={
        200: {
            "model": CheckOut,
            "description": "`validateOnly=true` and the request meets its policy: its price and "
            "the attachments to upload; nothing is sent to Sinch or kept.",
        },
        **_POST_ERRORS,
    },
)
async def submit_registration(
    request: Request,
    write: WriteDep,
    body: SinchBody,
    idempotency_key: IdempotencyKeyHeader = None,
    validate_only: Annotated[
        bool,
        Query(
            alias="validateOnly",
            description="`true`: check the request against its policy only (app/catalog): 200 "
            "with the price, or 422 with one entry per field in `errors`; nothing is sent.",
        ),
    ] = False,
) -> JSONResponse:
    resources = write.resources
    fields = dict(body)
    project_id = await write.project_of(fields.pop(PROJECT_FIELD, None))
    if validate_only:
        async with resources.reader() as session:
            checked = await service.check_policy(session, project_id, fields)
        return JSONResponse(CheckOut.of(checked.result).model_dump(mode="json", by_alias=True))
    sinch = await write.client(project_id)
    # Checked before the key is claimed: a request the policy refuses keeps nothing, so the fixed
    # request may reuse the key.
    async with resources.reader() as session:
        checked = await service.check_policy(session, project_id, fields)
    document = service.with_callback(checked.document, resources.settings, project_id)

    async def run() -> tuple[int, dict[str, Any]]:
        registration = await service.submit(
            resources.sessionmaker, sinch, document, actor=write.actor
        )
        answer = await write.answer(registration)
        return 201, answer.model_dump(mode="json", by_alias=True)

    return await idempotent(
        resources.sessionmaker, request, owner=write.principal.name, key=idempotency_key, run=run
    )


@router.put(
    "/{id}",
    operation_id="updateRegistration",
    summary="Update a registration at Sinch",
    description="Sends the registration's new content to Sinch (the way to answer PENDING), "
    "checked first against the body's policy or the registration's (422 with `errors`, nothing "
    "sent), and applies Sinch's answer (history source `submitted`). 404 for a registration "
    "not known here or of a project this token is not limited to. Errors as for a submission.",
    responses=_ERRORS,
)
async def update_registration(
    write: WriteDep, registration_id: RegistrationId, body: SinchBody
) -> RegistrationOut:
    registration, sinch = await write.known(registration_id)
    resources = write.resources
    updated = await service.update_checked(
        resources.sessionmaker, sinch, registration, body, resources.settings, actor=write.actor
    )
    return await write.answer(updated)


@router.delete(
    "/{id}",
    operation_id="deleteRegistration",
    summary="Delete a registration at Sinch",
    description="Deletes it at Sinch; the local copy stays with status `DELETED` (a change on "
    "the feed). 404 for a registration not known here or of a project this token is not "
    "limited to; Sinch unavailable 502, silent 504.",
    responses=_ERRORS,
)
async def delete_registration(write: WriteDep, registration_id: RegistrationId) -> RegistrationOut:
    registration, sinch = await write.known(registration_id)
    deleted = await service.delete(
        write.resources.sessionmaker, sinch, registration, actor=write.actor
    )
    return await write.answer(deleted)


AttachmentId = Annotated[
    str,
    Path(
        alias="attachmentId",
        min_length=1,
        max_length=255,
        description="The policy's attachment definition (`attachments[].id` of "
        "`GET /v1/policies/{policyId}`).",
    ),
]
STREAMED_HEADERS = ("content-type", "content-disposition")
"""Headers of Sinch's download passed on to the caller (not its length: the body is passed on
decoded, as httpx reads it, so a compressed answer's length would be wrong)."""


@router.post(
    "/{id}/attachments/{attachmentId}",
    operation_id="uploadAttachment",
    summary="Upload one attachment of a registration to Sinch",
    description="A multipart body with the file in part `file` (its content type is the file's "
    "MIME type). Checked against the registration's policy first: an attachment the policy "
    "does not define, an empty file or a MIME type outside its `allowedMimeTypes` is 422 with "
    "`errors`, a file above `ATTACHMENT_MAX_BYTES` 413; nothing sent. Then sent to Sinch, and "
    "the registration fetched again and kept (history source `submitted`): its `sinch."
    "attachments[]` shows the upload. Sinch's refusal 422 with `sinch`; unavailable 502, silent "
    "504.",
    responses=problem_responses(403, 404, 413, 422, 502, 503, 504),
)
async def upload_attachment(
    write: WriteDep,
    registration_id: RegistrationId,
    attachment_id: AttachmentId,
    file: Annotated[UploadFile, File(description="The file to attach.")],
) -> RegistrationOut:
    registration, sinch = await write.known(registration_id)
    upload = service.Upload(
        file_name=file.filename or attachment_id,
        mime_type=file.content_type or "application/octet-stream",
        content=await file.read(),
    )
    updated = await service.attach_checked(
        write.resources.sessionmaker,
        sinch,
        registration,
        attachment_id,
        upload,
        max_bytes=write.resources.settings.attachment_max_bytes,
        actor=write.actor,
    )
    return await write.answer(updated)


@reader.get(
    "/{id}/attachments/{attachmentId}",
    operation_id="downloadAttachment",
    summary="Download an attachment uploaded before",
    description="Streams Sinch's answer: the file, with Sinch's `Content-Type` (and "
    "`Content-Disposition` when Sinch sends one). 404 for a registration not known here (or of "
    "another project than the token's) and for an attachment Sinch does not have; Sinch "
    "unavailable 502, silent 504.",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The file as Sinch keeps it.",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        **problem_responses(404, 502, 503, 504),
    },
)
async def download_attachment(
    resources: ResourcesDep,
    clients: ProjectClientsDep,
    principal: PrincipalDep,
    registration_id: RegistrationId,
    attachment_id: AttachmentId,
) -> StreamingResponse:
    _, sinch = await _known(resources, clients, registration_id, principal)
    download = await service.download(sinch, registration_id, attachment_id)
    headers = {k: v for k, v in download.headers.items() if k.lower() in STREAMED_HEADERS}
    headers.setdefault("content-type", "application/octet-stream")
    return StreamingResponse(
        download.chunks, headers=headers, background=BackgroundTask(download.close)
    )
