"""The simulator's market requirement routes (`GET /markets/availability`, `GET
/policies/{policyId}`) and their control route (`PUT /_sim/policies/{policyId}`: Sinch revised a
policy). `GET /markets/details` stays with the registrations' routes (devtools/simulator/app.py),
which built the market map before the catalog existed."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Query
from fastapi.responses import JSONResponse

from devtools.simulator.catalog import availability
from devtools.simulator.state import (
    DEFAULT_REGISTRATION_TYPE,
    POLICIES,
    SimulatorState,
    policy_document,
)


def sinch_error(status: int, message: str) -> JSONResponse:
    """Sinch's error body: `{"error": {"code", "message", "status", "details"}}`."""
    return JSONResponse(
        {
            "error": {
                "code": status,
                "message": message,
                "status": HTTPStatus(status).name,
                "details": [],
            }
        },
        status_code=status,
    )


def install_catalog_routes(
    app: FastAPI, state: SimulatorState, base: str, guard: Callable[[str], Any]
) -> None:
    """Add the routes of the module docstring to `app`; `guard(stat)` is the public routes' auth
    and fault dependency (counting the call under `stat`)."""

    @app.get(f"{base}/markets/availability", dependencies=[guard("marketAvailability")])
    async def market_availability(
        market_code: Annotated[str | None, Query(alias="marketCode")] = None,
        registration_type: Annotated[str | None, Query(alias="registrationType")] = None,
        _language: Annotated[str | None, Query(alias="language")] = None,
    ) -> dict[str, Any]:
        kind = registration_type or DEFAULT_REGISTRATION_TYPE
        versions, _, _ = state.market_details_page(
            registration_type=kind, market_code=None, page_size=10**6, page_token=None
        )
        return {"markets": availability(versions, market_code)}

    @app.get(f"{base}/policies/{{policyId}}", dependencies=[guard("getPolicy")])
    async def get_policy(policy_id: Annotated[str, Path(alias="policyId")]) -> JSONResponse:
        document = policy_document(policy_id)
        if document is None:
            return sinch_error(404, f"policy {policy_id} not found")
        revised = state.catalog.revised(policy_id)
        if revised is not None:  # the type it serves is the catalog's, as for the others
            document = {"registrationType": document.get("registrationType"), **revised}
        return JSONResponse(document)

    @app.put(
        "/_sim/policies/{policy_id}",
        tags=["simulator control"],
        summary="Revise a policy",
        description=(
            "Serves the given document (any JSON object; its `id` is set to the path's, and "
            "`registrationType` is the catalog's unless given) as `GET /policies/{policyId}` for "
            "a policy of the catalog, until reset (not kept across restarts): Sinch revised the "
            "policy. Answers the "
            "document as given."
        ),
    )
    async def revise_policy(
        policy_id: str, document: Annotated[dict[str, Any], Body()]
    ) -> JSONResponse:
        if policy_id not in POLICIES:
            return sinch_error(404, f"policy {policy_id} not found")
        state.catalog.replace(policy_id, document)
        return JSONResponse(state.catalog.revised(policy_id))
