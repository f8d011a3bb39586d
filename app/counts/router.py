"""`GET /v1/counts`: the numbers the console's overview and `/metrics` show. HTTP only."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.core.db import utcnow
from app.core.schemas import problem_responses
from app.counts import service
from app.counts.schemas import CountsOut
from app.web.auth import require_token
from app.web.deps import ReadSessionDep

router = APIRouter(
    prefix="/v1/counts",
    tags=["counts"],
    dependencies=[Depends(require_token)],
    responses=problem_responses(401, 422),
)


@router.get(
    "",
    operation_id="getCounts",
    summary="Events by state, registrations by status, the last 24 hours",
    description="Exact at the moment of the answer, at a cost that does not grow with the "
    "tables: the database keeps the counts as rows change (docs/counting.md).",
)
async def get_counts(session: ReadSessionDep) -> CountsOut:
    return CountsOut.of(await service.read(session, utcnow()))
