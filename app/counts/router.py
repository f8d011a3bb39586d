"""`GET /v1/counts`: the numbers the console's overview and `/metrics` show. HTTP only."""

from __future__ import annotations

from app.core.db import utcnow
from app.core.schemas import operation
from app.counts import service
from app.counts.schemas import CountsOut
from app.web.auth import VisibleDep, api_router
from app.web.deps import ReadSessionDep

router = api_router("/v1/counts", "counts")


@router.get(
    "",
    **operation(
        "getCounts",
        "Events by state, registrations by status, the last 24 hours",
        description="Exact at the moment of the answer, at a cost that does not grow with the "
        "tables: the database keeps the counts as rows change (docs/counting.md).",
    ),
)
async def get_counts(session: ReadSessionDep, projects: VisibleDep) -> CountsOut:
    return CountsOut.of(await service.read(session, utcnow(), projects=projects))
