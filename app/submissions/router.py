"""Writes of registrations through the internal API (`POST`, `PUT`, `DELETE` under
`/v1/registrations`, write scope). HTTP only: parse, resolve the project, call the service, answer.

The policy check (issue 27, app/catalog) is one call in each route, before anything is sent or a
key claimed: marked `POLICY CHECK` below.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Query, Request
from fastapi.responses import JSONResponse

from app.catalog import service as catalog
from app.catalog.router import invalid_request
from app.catalog.schemas import CheckOut
from app.changes.live import SequencerDep
from app.core.models import Registration
from app.core.problems import ProblemError
from app.core.schemas import problem_responses
from app.forecasts import queries as forecast_queries
from app.projects.clients import ProjectClients, ProjectClientsDep
from app.projects.queries import get_project
from app.registrations import queries
from app.registrations.router import RegistrationId
from app.registrations.schemas import RegistrationOut
from app.sinch.client import SinchClient
from app.submissions import service
from app.tokens.principal import Principal
from app.web.auth import ActorDep, WriterDep, api_router, require_write
from app.web.deps import Resources, ResourcesDep
from app.web.idempotency import IdempotencyKeyHeader, idempotent

router = api_router("/v1/registrations", "registrations", guard=require_write)

PROJECT_FIELD = "projectId"
_ERRORS = problem_responses(403, 404, 422, 502, 503, 504)
_POST_ERRORS = problem_responses(403, 404, 409, 422, 502, 503, 504)
"""A POST also answers 409: its `Idempotency-Key` is still in flight."""

SinchBody = Annotated[
    dict[str, Any],
    Body(
        description="The registration as Sinch's create (or update) takes it: `registrationType`, "
        "`policyId`, `requestDetails`, `tags`, `notificationContacts`, ... (docs/sinch.md); "
        "never `callbackUrl`, which the service sets. For a create, `projectId` names the "
        "project where several exist (default: the token's only project, else the project the "
        "settings define).",
    ),
]


async def _project_of(resources: Resources, principal: Principal, named: object) -> str:
    """The project a new registration is submitted to: `named`, else the token's only project,
    else the settings' project. 404 when it is not a project here or not among the token's."""
    if named is not None and not isinstance(named, str):
        raise ProblemError(422, "`projectId` must be a string.")
    project_id = named
    if project_id is None:
        limit = principal.projects
        only = next(iter(limit)) if limit is not None and len(limit) == 1 else None
        project_id = only or resources.settings.settings_project_id
    async with resources.reader() as session:
        project = await get_project(session, project_id, principal.projects)
    if project is None:
        raise ProblemError(404, "No project with this id is known here.")
    return project_id


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


async def _answer(resources: Resources, registration: Registration) -> RegistrationOut:
    async with resources.reader() as session:
        forecasts = await forecast_queries.forecasts_of(session, [registration.id])
    return RegistrationOut.of(registration, forecasts.get(registration.id))


@router.post(
    "",
    status_code=201,
    operation_id="submitRegistration",
    summary="Submit a new registration to Sinch",
    description="Creates the registration at Sinch with `callbackUrl` = `PUBLIC_BASE_URL` + its "
    "project's callback path, and keeps Sinch's answer as the local copy (history source "
    "`submitted`; on the change feed at once). Honours `Idempotency-Key` (24 hours). Sinch's "
    "refusal is 422 with its error under `sinch`; Sinch unavailable 502, silent 504; "
    "`PUBLIC_BASE_URL` unset or the project without credentials 503.",
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
    resources: ResourcesDep,
    clients: ProjectClientsDep,
    sequencer: SequencerDep,
    principal: WriterDep,
    actor: ActorDep,
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
    fields = dict(body)
    project_id = await _project_of(resources, principal, fields.pop(PROJECT_FIELD, None))
    if validate_only:
        async with resources.reader() as session:
            result = await catalog.check_request(session, project_id, fields)
        if not result.valid:
            raise invalid_request(result)
        return JSONResponse(CheckOut.of(result).model_dump(mode="json", by_alias=True))
    sinch = await _client(clients, project_id)
    document = service.with_callback(fields, resources.settings, project_id)
    # POLICY CHECK: the check against the registration's policy goes here (one line), before the
    # key is claimed: a request it refuses keeps nothing, so the fixed request may reuse the key.

    async def run() -> tuple[int, dict[str, Any]]:
        registration = await service.submit(resources.sessionmaker, sinch, document, actor=actor)
        sequencer.poke()  # the new registration goes on the feed
        answer = await _answer(resources, registration)
        return 201, answer.model_dump(mode="json", by_alias=True)

    return await idempotent(
        resources.sessionmaker, request, owner=principal.name, key=idempotency_key, run=run
    )


@router.put(
    "/{id}",
    operation_id="updateRegistration",
    summary="Update a registration at Sinch",
    description="Sends the registration's new content to Sinch (the way to answer PENDING) and "
    "applies Sinch's answer (history source `submitted`). 404 for a registration not known "
    "here or of a project this token is not limited to. Errors as for a submission.",
    responses=_ERRORS,
)
async def update_registration(
    resources: ResourcesDep,
    clients: ProjectClientsDep,
    sequencer: SequencerDep,
    principal: WriterDep,
    actor: ActorDep,
    registration_id: RegistrationId,
    body: SinchBody,
) -> RegistrationOut:
    registration, sinch = await _known(resources, clients, registration_id, principal)
    document = service.with_callback(dict(body), resources.settings, registration.project_id)
    # POLICY CHECK: the check against the registration's policy goes here (one line).
    updated = await service.update(
        resources.sessionmaker, sinch, registration_id, document, actor=actor
    )
    sequencer.poke()
    return await _answer(resources, updated)


@router.delete(
    "/{id}",
    operation_id="deleteRegistration",
    summary="Delete a registration at Sinch",
    description="Deletes it at Sinch; the local copy stays with status `DELETED` (a change on "
    "the feed). 404 for a registration not known here or of a project this token is not "
    "limited to; Sinch unavailable 502, silent 504.",
    responses=_ERRORS,
)
async def delete_registration(
    resources: ResourcesDep,
    clients: ProjectClientsDep,
    sequencer: SequencerDep,
    principal: WriterDep,
    actor: ActorDep,
    registration_id: RegistrationId,
) -> RegistrationOut:
    registration, sinch = await _known(resources, clients, registration_id, principal)
    deleted = await service.delete(resources.sessionmaker, sinch, registration, actor=actor)
    sequencer.poke()
    return await _answer(resources, deleted)
