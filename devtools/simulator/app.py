"""The simulator's HTTP face: Sinch-like routes, a token endpoint and the `/_sim/` control API.

`create_simulator_app` builds a fresh `SimulatorState` per app: nothing lives at module level, so
several simulators can run in one process (one per test, say).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.web.docs import install_docs
from devtools.simulator.attachments import install_attachment_routes
from devtools.simulator.catalog_routes import install_catalog_routes
from devtools.simulator.delivery import DeliveryOrder, DeliveryResult, deliver, plan_delivery
from devtools.simulator.state import (
    Fault,
    FaultPaths,
    RequestKind,
    SimulatorInputError,
    SimulatorState,
    UnknownRegistrationError,
    list_filters,
)
from devtools.simulator.writes import install_registration_writes

log = logging.getLogger(__name__)


class _Answer(Exception):
    """Raised by a guard to answer at once with `response` (an error or an injected fault)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": status, "message": message}}, status_code=status, headers=headers
    )


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class CreateRegistrationBody(_Body):
    id: str | None = None
    registration_type: str | None = Field(default=None, alias="registrationType")
    status: str | None = None
    callback_url: str | None = Field(default=None, alias="callbackUrl")
    at: str | None = None
    tags: list[str] | None = None
    """None: the simulator may add a tag or two."""
    sender_id: str | None = Field(default=None, alias="senderId")
    sender_ids: list[str] | None = Field(default=None, alias="senderIds")
    policy_id: str | None = Field(default=None, alias="policyId")
    extra: dict[str, Any] | None = None
    lifecycle: list[str] = Field(default_factory=list)
    """States to move through right after creation, one second apart."""


class TransitionBody(_Body):
    status: str
    at: str | None = None
    comment: str | None = None


class DeliverBody(_Body):
    url: str | None = None
    event_ids: list[str] | None = Field(default=None, alias="eventIds")
    order: DeliveryOrder = "in_order"
    duplicates: int = Field(default=0, ge=0)
    omit: list[str] = Field(default_factory=list)
    seed: int | None = None
    delay_seconds: float = Field(default=0.0, ge=0, alias="delaySeconds")
    concurrency: int = Field(default=1, ge=1, le=200)
    wait: bool = True


class FaultBody(_Body):
    kind: Literal["status", "hang"]
    status: int = Field(default=503, ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0, alias="retryAfter")
    count: int = Field(default=1, ge=1)
    delay_seconds: float = Field(default=0.0, ge=0, alias="delaySeconds")
    paths: FaultPaths = "api"


class MarketVersionsBody(_Body):
    registration_type: str | None = Field(default=None, alias="registrationType")
    market_versions: list[Any] = Field(alias="marketVersions")


class CallbackConfigurationBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    hmac_secret: str = Field(min_length=1, alias="hmacSecret")


def create_simulator_app(
    *,
    project_id: str,
    key_id: str,
    key_secret: str,
    hmac_secret: str,
    token_ttl_seconds: int = 3600,
    seed: int | None = None,
) -> FastAPI:
    """A Sinch Registrations API simulator for one project, with its own fresh state.

    Public routes follow docs/sinch.md (paths under `/v1/projects/{projectId}`, and `POST
    /oauth2/token`); the control API under `/_sim/` needs no auth. `seed` makes ids and random
    choices repeatable.
    """
    state = SimulatorState(
        project_id=project_id,
        key_id=key_id,
        key_secret=key_secret,
        hmac_secret=hmac_secret,
        token_ttl_seconds=token_ttl_seconds,
        seed=seed,
    )
    background: set[asyncio.Task[list[DeliveryResult]]] = set()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for task in background:
            task.cancel()

    app = FastAPI(
        title="Sinch Registrations API simulator",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs: no CDN
        redoc_url=None,
    )
    install_docs(app)
    app.state.simulator = state

    @app.exception_handler(_Answer)
    async def answer(_: Request, exc: _Answer) -> Response:
        return exc.response

    @app.exception_handler(SimulatorInputError)
    async def bad_input(_: Request, exc: SimulatorInputError) -> Response:
        return _error(400, str(exc))

    @app.exception_handler(UnknownRegistrationError)
    async def unknown(_: Request, exc: UnknownRegistrationError) -> Response:
        return _error(404, f"registration {exc.args[0]} not found")

    async def apply_fault(kind: RequestKind) -> None:
        fault = state.take_fault(kind)
        if fault is None:
            return
        if fault.kind == "hang":
            await asyncio.sleep(fault.delay_seconds)
            return
        headers = (
            {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
        )
        raise _Answer(_error(fault.status, "injected fault", headers))

    def api_guard(stat: str) -> Any:
        async def guard(
            request: Request, project_id: Annotated[str, Path(alias="projectId")]
        ) -> None:
            state.stats[stat] += 1
            await apply_fault("api")
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not state.token_is_valid(token.strip()):
                state.stats["unauthorized"] += 1
                raise _Answer(_error(401, "Unauthorized", {"WWW-Authenticate": "Bearer"}))
            if project_id != state.project_id:
                raise _Answer(_error(404, f"project {project_id} not found"))

        return Depends(guard)

    # --- Sinch-like routes ------------------------------------------------------------------

    @app.post("/oauth2/token")
    async def token(request: Request) -> Response:
        state.stats["token"] += 1
        await apply_fault("token")
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        if form.get("grant_type") != ["client_credentials"]:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        key_id, key_secret = _basic_credentials(request.headers.get("Authorization", ""))
        if key_id is None:
            key_id = (form.get("client_id") or [""])[0]
            key_secret = (form.get("client_secret") or [""])[0]
        if not state.check_credentials(key_id, key_secret or ""):
            state.stats["tokenRejected"] += 1
            return JSONResponse(
                {"error": "invalid_client"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="sinch"'},
            )
        return JSONResponse(
            {
                "access_token": state.issue_token(),
                "token_type": "Bearer",
                "expires_in": state.token_ttl_seconds,
                "scope": "",
            },
            headers={"Cache-Control": "no-store"},
        )

    base = "/v1/projects/{projectId}"

    @app.get(f"{base}/registrations", dependencies=[api_guard("listRegistrations")])
    async def list_registrations(
        page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000)] = 20,
        page_token: Annotated[str | None, Query(alias="pageToken")] = None,
        registration_type: Annotated[str | None, Query(alias="registrationType")] = None,
        registration_state: Annotated[str | None, Query(alias="registrationState")] = None,
        update_date_from: Annotated[str | None, Query(alias="updateDateFrom")] = None,
        update_date_to: Annotated[str | None, Query(alias="updateDateTo")] = None,
        create_date_from: Annotated[str | None, Query(alias="createDateFrom")] = None,
        create_date_to: Annotated[str | None, Query(alias="createDateTo")] = None,
        tags: Annotated[list[str] | None, Query()] = None,
    ) -> dict[str, Any]:
        filters = list_filters(
            registration_type=registration_type,
            registration_state=registration_state,
            update_date_from=update_date_from,
            update_date_to=update_date_to,
            create_date_from=create_date_from,
            create_date_to=create_date_to,
            tags=tags or [],
        )
        documents, next_token, total = state.list_page(
            filters, page_size=page_size, page_token=page_token
        )
        return {"registrations": documents, "nextPageToken": next_token, "totalSize": total}

    @app.get(
        f"{base}/registrations/{{registrationId}}", dependencies=[api_guard("getRegistration")]
    )
    async def get_registration(
        registration_id: Annotated[str, Path(alias="registrationId")],
    ) -> dict[str, Any]:
        return state.get(registration_id)

    @app.get(f"{base}/callback-configuration", dependencies=[api_guard("callbackConfiguration")])
    async def get_callback_configuration() -> dict[str, Any]:
        return {"hmacSecret": state.current_hmac_secret, "projectId": state.project_id}

    @app.put(f"{base}/callback-configuration", dependencies=[api_guard("callbackConfiguration")])
    async def put_callback_configuration(body: CallbackConfigurationBody) -> dict[str, Any]:
        state.stats["putCallbackConfiguration"] += 1
        state.current_hmac_secret = body.hmac_secret
        return {"hmacSecret": state.current_hmac_secret, "projectId": state.project_id}

    @app.get(f"{base}/markets/details", dependencies=[api_guard("marketDetails")])
    async def market_details(
        page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000)] = 20,
        page_token: Annotated[str | None, Query(alias="pageToken")] = None,
        registration_type: Annotated[str | None, Query(alias="registrationType")] = None,
        market_code: Annotated[str | None, Query(alias="marketCode")] = None,
    ) -> dict[str, Any]:
        versions, next_token, total = state.market_details_page(
            registration_type=registration_type,
            market_code=market_code,
            page_size=page_size,
            page_token=page_token,
        )
        return {"marketVersions": versions, "totalSize": total, "nextPageToken": next_token}

    install_catalog_routes(app, state, base, api_guard)

    install_registration_writes(app, state, api_guard)
    install_attachment_routes(app, state, api_guard)

    # --- control API ------------------------------------------------------------------------

    @app.get(
        "/_sim/health",
        tags=["simulator control"],
        summary="Is the simulator up",
        description="Answers its project id. No auth, like every `/_sim` route.",
    )
    async def health() -> dict[str, Any]:
        return {"ok": True, "projectId": state.project_id}

    @app.post(
        "/_sim/registrations",
        status_code=201,
        tags=["simulator control"],
        summary="Create a registration",
        description=(
            "Creates a registration (default IN_QUEUE, ALPHANUMERIC_SENDER_ID) and records its "
            "creation callback; `lifecycle` states are applied right after, one second apart, each "
            "recording a callback. `policyId` names a policy of the catalog (else one is picked "
            "for the type), `senderIds` its sender IDs (else generated); without `tags` one or two "
            "may be added. Answers the document as Sinch would."
        ),
    )
    async def create_registration(body: CreateRegistrationBody) -> dict[str, Any]:
        document = state.create(
            registration_id=body.id,
            registration_type=body.registration_type,
            status=body.status,
            callback_url=body.callback_url,
            at=body.at,
            tags=body.tags,
            sender_id=body.sender_id,
            sender_ids=body.sender_ids,
            policy_id=body.policy_id,
            extra=body.extra,
        )
        for status in body.lifecycle:
            state.transition(document["id"], status)
        return state.get(document["id"]) if body.lifecycle else document

    @app.get(
        "/_sim/registrations",
        tags=["simulator control"],
        summary="Every registration (the truth)",
        description="Every registration of every type, in creation order.",
    )
    async def all_registrations() -> list[dict[str, Any]]:
        return state.all_documents()

    @app.get(
        "/_sim/registrations/{registration_id}",
        tags=["simulator control"],
        summary="One registration's truth",
        description="The document as the public GET answers it, without auth.",
    )
    async def truth(registration_id: str) -> dict[str, Any]:
        return state.get(registration_id)

    @app.get(
        "/_sim/registrations/{registration_id}/facts",
        tags=["simulator control"],
        summary="One registration's facts (the oracle)",
        description=(
            "What the simulator knows of the registration, not read back out of its document: "
            "`senderIds`, `marketCode` (the policy's market, or a top-level `marketCode` given in "
            "`extra`; null for a policy in no market version), `policyId`, `tags`, `etaDate`, "
            "`price`, `statusSince` (when the current status was entered) and `reason` (the newest "
            "log entry: `message`, `state`, `at`; or null)."
        ),
    )
    async def facts(registration_id: str) -> dict[str, Any]:
        return state.facts(registration_id)

    @app.post(
        "/_sim/registrations/{registration_id}/transitions",
        status_code=201,
        tags=["simulator control"],
        summary="Move a registration",
        description=(
            "Sets its status (any string) and `updateTime` (now, at least one second after the "
            "previous, or `at`); `comment` (or, without one, a canned reason for REJECTED, "
            "PENDING, PENDING_ATTACHMENTS and ON_HOLD) becomes a log entry and the callback's "
            "`comments`. Records the callback event and answers it. Nothing is delivered until "
            "`/_sim/deliver`."
        ),
    )
    async def transition(registration_id: str, body: TransitionBody) -> dict[str, Any]:
        return state.transition(registration_id, body.status, at=body.at, comment=body.comment)

    @app.get(
        "/_sim/registrations/{registration_id}/events",
        tags=["simulator control"],
        summary="A registration's recorded callbacks",
        description="Oldest first, as the bodies Sinch would POST.",
    )
    async def events_of(registration_id: str) -> list[dict[str, Any]]:
        return state.events_of(registration_id)

    @app.get(
        "/_sim/events",
        tags=["simulator control"],
        summary="Every recorded callback",
        description="Oldest first.",
    )
    async def all_events() -> list[dict[str, Any]]:
        return state.events_named(e["eventId"] for e in state.events)

    @app.post(
        "/_sim/deliver",
        tags=["simulator control"],
        summary="Deliver recorded callbacks",
        description=(
            "POSTs the named events (or all) to `url`, signed with the HMAC secret, in order or "
            "shuffled, duplicated, omitted or late as asked; answers each delivery's HTTP status."
        ),
    )
    async def deliver_events(body: DeliverBody, response: Response) -> list[DeliveryResult]:
        if body.event_ids is None:
            events = state.events_named(e["eventId"] for e in state.events)
        else:
            events = state.events_named(body.event_ids)
        rng = random.Random(body.seed) if body.seed is not None else state.rng
        plan = plan_delivery(
            events, order=body.order, duplicates=body.duplicates, omit=body.omit, rng=rng
        )
        url_for: dict[str, str] = {}
        for event in plan:
            url = body.url or state.get(event["resourceId"]).get("callbackUrl")
            if not url:
                raise SimulatorInputError(
                    f"no url given and registration {event['resourceId']} has no callbackUrl"
                )
            url_for[event["eventId"]] = url
        job = deliver(
            plan,
            url_for=url_for,
            hmac_secret=state.current_hmac_secret,
            concurrency=body.concurrency,
            delay_seconds=body.delay_seconds,
        )
        if body.wait:
            results = await job
            state.stats["delivered"] += len(results)
            return results
        task = asyncio.create_task(job)
        background.add(task)
        task.add_done_callback(background.discard)
        state.stats["delivered"] += len(plan)
        response.status_code = 202
        return [
            DeliveryResult(eventId=e["eventId"], url=url_for[e["eventId"]], status=None, error=None)
            for e in plan
        ]

    @app.post(
        "/_sim/market-versions",
        status_code=201,
        tags=["simulator control"],
        summary="Serve more market versions",
        description=(
            "Appends `marketVersions` (any JSON values, odd shapes included) to the list GET "
            "/markets/details serves for `registrationType` (default ALPHANUMERIC_SENDER_ID), after"
            " the catalog's, until reset. Answers how many that list now has."
        ),
    )
    async def add_market_versions(body: MarketVersionsBody) -> dict[str, Any]:
        total = state.add_market_versions(
            body.market_versions, registration_type=body.registration_type
        )
        return {"marketVersions": total}

    @app.post(
        "/_sim/faults",
        status_code=201,
        tags=["simulator control"],
        summary="Inject a fault",
        description=(
            "The next matching calls of the public API answer the given status (503, 429 with "
            "Retry-After, ...) or hang."
        ),
    )
    async def add_fault(body: FaultBody) -> dict[str, Any]:
        state.faults.append(
            Fault(
                kind=body.kind,
                count=body.count,
                paths=body.paths,
                status=body.status,
                retry_after=body.retry_after,
                delay_seconds=body.delay_seconds,
            )
        )
        return {"pending": sum(f.count for f in state.faults)}

    @app.delete(
        "/_sim/faults",
        tags=["simulator control"],
        summary="Clear the faults",
        description="Every pending fault is dropped.",
    )
    async def clear_faults() -> dict[str, Any]:
        state.faults.clear()
        return {"pending": 0}

    @app.post(
        "/_sim/tokens/revoke",
        tags=["simulator control"],
        summary="Revoke access tokens",
        description="Every token issued so far answers 401 from now on.",
    )
    async def revoke_tokens() -> dict[str, Any]:
        return {"revoked": state.revoke_tokens()}

    @app.get(
        "/_sim/stats",
        tags=["simulator control"],
        summary="Calls counted",
        description="How many times each public operation was called (e.g. `getRegistration`).",
    )
    async def stats() -> dict[str, int]:
        return state.stats_snapshot()

    @app.post(
        "/_sim/reset",
        tags=["simulator control"],
        summary="Reset",
        description=(
            "Forgets every registration, event, fault, token and added market version, and "
            "restores the first HMAC secret."
        ),
    )
    async def reset() -> dict[str, Any]:
        for task in background:
            task.cancel()
        state.reset()
        return {"ok": True}

    return app


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    """(key id, key secret) from an HTTP Basic `Authorization` header; (None, None) without one."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    key_id, sep, key_secret = decoded.partition(":")
    if not sep:
        return None, None
    return key_id, key_secret
