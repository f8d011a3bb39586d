"""Documents of the internal API about registrations (docs/api.md lists the fields)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.api_schemas import ApiModel, ApiTime
from app.models import HistorySource


class RegistrationOut(ApiModel):
    """The local copy of a registration."""

    id: str
    status: str = Field(description="Sinch's state name, as sent (states unknown here included).")
    registration_type: str | None
    status_changed_at: ApiTime | None = Field(
        description="Sinch's time of the newest information applied: an event's time or the "
        "document's `updateTime`."
    )
    last_synced_at: ApiTime | None = Field(
        description="When the registration was last fetched from Sinch (this service's clock)."
    )
    sinch: dict[str, Any] | None = Field(
        description="The last full document fetched from Sinch, exactly as Sinch sent it."
    )
    created_at: ApiTime
    updated_at: ApiTime


class RegistrationPage(ApiModel):
    items: list[RegistrationOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


class HistoryItem(ApiModel):
    """One status change applied to the registration."""

    from_status: str | None = Field(description="Null on the registration's first row.")
    to_status: str
    at: ApiTime = Field(description="Sinch's time of the change.")
    source: HistorySource
    event_id: str | None = Field(
        description="Sinch's event id of the callback that caused the change (or whose check "
        "did); null when no callback was involved or it carried no id."
    )
    note: str | None = Field(
        default=None,
        description="Why the change needs explaining; null for most rows. Set when Sinch's "
        "document overruled a status a callback had set (a hint never outranks the truth).",
    )


class HistoryOut(ApiModel):
    items: list[HistoryItem] = Field(
        description="Oldest first, in the order the changes were applied here (so each row's "
        "fromStatus is the toStatus of the row before it, even when a snapshot corrected a "
        "callback that claimed a later time)."
    )
