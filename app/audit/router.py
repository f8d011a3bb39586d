"""`GET /v1/audit`: the audit trail, for `write` tokens only. HTTP only: parse, call, answer."""

from __future__ import annotations

from typing import Annotated

from app.audit import queries
from app.audit.schemas import AuditEntryOut, AuditPage
from app.core.schemas import operation, text_filter
from app.web.auth import VisibleDep, api_router, require_write
from app.web.deps import ReadSessionDep
from app.web.pages import RowIdPageDep

# Who did what, from where, is for those who may act themselves.
router = api_router("/v1/audit", "audit", guard=require_write, errors=(403,))


@router.get(
    "", **operation("listAudit", "The audit trail: every write, newest first (scope `write`)")
)
async def list_audit(
    session: ReadSessionDep,
    asked: RowIdPageDep,
    projects: VisibleDep,
    actor: Annotated[str | None, text_filter("Only this actor's entries (a token's name).")] = None,
    action: Annotated[
        str | None, text_filter("Only entries of this action (`event.replay`).")
    ] = None,
) -> AuditPage:
    before = asked.after(queries.AuditKey)
    rows = await queries.recent(
        session, limit=asked.limit + 1, before=before, actor=actor, action=action, projects=projects
    )
    items, next_cursor = asked.split(rows, queries.key_of)
    return AuditPage(
        items=[AuditEntryOut.model_validate(row) for row in items], next_cursor=next_cursor
    )
