"""Documents of the internal API about kept callback events (CONTRACT.md names the fields).

The raw body and headers are never part of an answer: they may hold anything Sinch sent.
"""

from __future__ import annotations

from pydantic import Field

from app.api_schemas import ApiModel, ApiTime
from app.models import EventState


class EventOut(ApiModel):
    """One kept callback event."""

    id: int = Field(description="The inbox row's id: the `{id}` of /v1/events/{id}.")
    event_id: str = Field(
        validation_alias="dedup_key",
        serialization_alias="eventId",
        description="Sinch's event id, or `sha256:<hex>` of the body when the body has none.",
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
