"""Documents of the internal API about kept callback events (docs/api.md lists the fields).

The raw body and headers are never part of an answer: they may hold anything Sinch sent.
"""

from __future__ import annotations

from pydantic import Field

from app.api_schemas import ApiModel, ApiTime
from app.models import EventState


class EventOut(ApiModel):
    """One kept callback event."""

    id: int = Field(description="The event's id here: the `{id}` of /v1/events/{id}.")
    event_id: str | None = Field(
        description="Sinch's event id (the body's `eventId`); null when the body has none."
    )
    dedup_key: str = Field(
        description="The event's identity for deduplication: Sinch's event id, or "
        "`sha256:<hex>` of the raw body when it has none. Deliveries with the same key are one "
        "event (counted in `duplicateCount`)."
    )
    registration_id: str | None = Field(description="Null when the body names no registration.")
    state: EventState
    outcome: str | None = Field(
        description="How processing ended (e.g. `applied:trusted`); null until it has."
    )
    attempts: int = Field(description="Processing tries so far.")
    last_error: str | None
    received_at: ApiTime
    processed_at: ApiTime | None
    duplicate_count: int = Field(description="Deliveries of the same event after the first.")


class EventPage(ApiModel):
    items: list[EventOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")
