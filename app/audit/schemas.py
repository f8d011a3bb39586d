"""Documents of `GET /v1/audit` (docs/api.md lists the fields)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.core.schemas import ApiModel, ApiTime


class AuditEntryOut(ApiModel):
    """One recorded write."""

    id: int = Field(description="The entry's number; later entries have larger ones.")
    at: ApiTime = Field(description="When the write was committed (the service's clock).")
    project_id: str | None = Field(
        description="The Sinch project it acted in; null for a deployment-wide write (a token, "
        "a subscription), which only a token limited to no project sees."
    )
    actor: str = Field(
        description="Who: the token's name (`env:<n>` for the n-th of INTERNAL_API_TOKENS), or "
        "`cli:<user>` for the command line. Never the token."
    )
    action: str = Field(
        description="What: `registration.refresh`, `event.replay`, `subscription.create`, "
        "`subscription.change`, `subscription.delete`, `subscription.rotate_secret`, "
        "`delivery.retry`, `token.create`, `token.revoke`, `callback_secret.rotate`, "
        "`callback_secret.rotate_refused`, `callback_secret.set`."
    )
    target: str | None = Field(
        description="What it acted on: a registration, event, subscription or delivery id, a "
        "token's name; null when the action has no one target."
    )
    client: str | None = Field(
        description="From where: the client's address (the TCP peer, or the address "
        "`X-Forwarded-For` names when the peer is a proxy uvicorn trusts: "
        "`--forwarded-allow-ips`, 127.0.0.1 unless set), or `cli@<host>`."
    )
    forwarded_for: str | None = Field(
        description="The request's `X-Forwarded-For` as sent: true only behind a trusted proxy."
    )
    detail: dict[str, Any] | None = Field(
        description="More about the write (e.g. a token's scope, the changed fields); never a "
        "secret."
    )


class AuditPage(ApiModel):
    items: list[AuditEntryOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")
