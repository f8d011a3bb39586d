"""Documents of the internal API about kept callback events (docs/api.md lists the fields).

The raw body and headers are never part of an answer: they may hold anything Sinch sent. What the
body claims (a status and its time) is shown as the worker reads it (`read_claim`).
"""

from __future__ import annotations

from pydantic import Field

from app.core.models import CallbackEvent, EventState
from app.core.schemas import ApiModel, ApiTime, same_named
from app.events.parsing import read_claim

OUTCOME_DESCRIPTION = """How processing ended, `<action>:<reason>`; null until it has. \
The outcomes (the Outcomes section of docs/api.md says more):

- `applied:trusted`: the claim is newer than what is held and an allowed move: applied as it is.
- `ignored:duplicate`: the claim is the status at the time already held (by another event saying \
the same under another dedup key, by a document, or by this event processed before a replay).
- `ignored:superseded`: not newer than what is held, and a document fetched since covers it.
- `checked:*`: the registration was fetched from Sinch (GET) and that document applied, because \
the claim could not be trusted: `checked:stale` (not newer, no document covers it), \
`checked:invalid_transition` (a move the table does not allow), `checked:unknown_registration` \
(not known here yet), `checked:unknown_state`, `checked:no_state`, `checked:no_time` (no usable \
state or time in the body), `checked:future_time` (later than our clock plus \
EVENT_TIME_SKEW_SECONDS).
- `invalid:not_json`, `invalid:no_registration_id`: the body is unreadable; \
`invalid:unknown_at_sinch`: the GET answered 404. Replayable.
- `failed:not_configured` (no Sinch credentials), `failed:rejected` (Sinch refused the GET or the \
token), `failed:sinch_unavailable` (every try of JOB_MAX_TRIES), `failed:unusable_answer`: \
given up; replayable once fixed."""

DUPLICATE_COUNT_DESCRIPTION = """Redeliveries of this very event (same `dedupKey`) after the \
first: merged into this row on arrival, never processed apart, with no outcome of their own. \
Another event claiming the same status and time (another `eventId`, or a body differing by a byte) \
is not counted here: it is an event of its own, which ends `ignored:duplicate` when what it \
claims is still what is held."""


_CLAIMED = ("claimed_status", "claimed_at")
"""What `EventOut` reads from the event's body; it shows its other columns as they are."""


class EventOut(ApiModel):
    """One kept callback event."""

    id: int = Field(description="The event's id here: the `{id}` of /v1/events/{id}.")
    project_id: str = Field(description="The Sinch project it belongs to.")
    event_id: str | None = Field(
        description="Sinch's event id (the body's `eventId`); null when the body has none."
    )
    dedup_key: str = Field(
        description="The event's identity for deduplication: Sinch's event id, or "
        "`sha256:<hex>` of the raw body when it has none. Deliveries with the same key are one "
        "event (counted in `duplicateCount`)."
    )
    registration_id: str | None = Field(description="Null when the body names no registration.")
    claimed_status: str | None = Field(
        description="The status the body claims (`status`, else `registrationState`), as sent; "
        "null when it has none or is not a JSON object."
    )
    claimed_at: ApiTime | None = Field(
        description="The time the body claims for that status (`createTime`, `timestamp`, "
        "`eventTime` or `updateTime`, the first readable), in UTC; null when it has none."
    )
    state: EventState
    outcome: str | None = Field(description=OUTCOME_DESCRIPTION)
    attempts: int = Field(description="Processing tries so far.")
    last_error: str | None
    received_at: ApiTime
    processed_at: ApiTime | None
    duplicate_count: int = Field(description=DUPLICATE_COUNT_DESCRIPTION)

    @classmethod
    def of(cls, event: CallbackEvent) -> EventOut:
        """The document of a row loaded by `app.events.queries` (its body included)."""
        claimed_status, claimed_at = read_claim(event.body)
        return cls(
            **same_named(cls, event, but=_CLAIMED),
            claimed_status=claimed_status,
            claimed_at=claimed_at,
        )


class EventPage(ApiModel):
    items: list[EventOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")
