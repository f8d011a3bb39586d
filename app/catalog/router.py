"""The catalog's routes: `GET /v1/markets`, `/v1/markets/{marketCode}`, `/v1/policies/{policyId}`
(scope `read`), and the check, `POST /v1/registrations?validateOnly=true` (scope `write`). HTTP
only: parse, call, answer. Reads come from the stored catalog, never from Sinch.

The create route (`POST /v1/registrations` without `validateOnly`) belongs to the submit path:
it checks through `app.submissions.service.check_policy`, which answers an invalid request with
`app.catalog.service.invalid_request(result)` as this route does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from app.catalog import queries
from app.catalog.schema import request_schema
from app.catalog.schemas import (
    MarketDetailOut,
    MarketOut,
    MarketPage,
    PolicyOut,
)
from app.core.problems import ProblemError
from app.core.schemas import (
    problem_responses,
    text_filter,
    text_path,
)
from app.web.auth import VisibleDep, api_router
from app.web.deps import ReadSessionDep
from app.web.pages import TextIdPageDep

markets_router = api_router("/v1/markets", "markets")
policies_router = api_router("/v1/policies", "markets", errors=(404,))

MarketCode = Annotated[
    str, text_path("ISO 3166 alpha-2, as Sinch writes it.", alias="marketCode", max_length=16)
]
PolicyId = Annotated[str, text_path("Sinch's policy id.", alias="policyId")]


@markets_router.get(
    "",
    operation_id="listMarkets",
    summary="Markets and their policies, by market code, type and project (scope `read`)",
)
async def list_markets(
    session: ReadSessionDep,
    asked: TextIdPageDep,
    projects: VisibleDep,
    registration_type: Annotated[
        str | None,
        text_filter("Only markets of this type (`ALPHANUMERIC_SENDER_ID`, ...).", alias="type"),
    ] = None,
) -> MarketPage:
    after = asked.after(queries.MarketKey)
    rows = await queries.markets(
        session,
        limit=asked.limit + 1,
        after=after,
        projects=projects,
        registration_type=registration_type,
    )
    items, next_cursor = asked.split(rows, queries.key_of)
    return MarketPage(
        items=[MarketOut.model_validate(row) for row in items], next_cursor=next_cursor
    )


MAX_MARKET_ROWS = 200
"""One market's rows answered at most (a type per row and project: far fewer in practice)."""


@markets_router.get(
    "/{marketCode}",
    operation_id="getMarket",
    summary="One market: each registration type and project it is served for (scope `read`)",
    responses=problem_responses(404),
)
async def get_market(
    session: ReadSessionDep, projects: VisibleDep, market_code: MarketCode
) -> MarketDetailOut:
    rows = await queries.markets(
        session, limit=MAX_MARKET_ROWS, after=None, projects=projects, market_code=market_code
    )
    if not rows:
        raise ProblemError(404, "No such market in the catalog.")
    names = [row.market_name for row in rows if row.market_name]
    return MarketDetailOut(
        market_code=market_code,
        market_name=names[0] if names else None,
        items=[MarketOut.model_validate(row) for row in rows],
    )


@policies_router.get(
    "/{policyId}",
    operation_id="getPolicy",
    summary="A policy, its request schema and its recorded changes (scope `read`)",
)
async def get_policy(
    session: ReadSessionDep, projects: VisibleDep, policy_id: PolicyId
) -> PolicyOut:
    row = await queries.policy(session, policy_id, projects)
    if row is None:
        raise ProblemError(404, "No such policy in the catalog.")
    changes = await queries.policy_changes(session, row.project_id, policy_id)
    return PolicyOut.of(row, request_schema(row.document), changes)


routers: tuple[APIRouter, ...] = (markets_router, policies_router)
