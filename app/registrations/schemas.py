"""Documents of the internal API about registrations (docs/api.md lists the fields)."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import Field, model_validator

from app.core.models import HistorySource
from app.core.schemas import ApiModel, ApiTime


class ReasonOut(ApiModel):
    """Why the registration stands where it does, in Sinch's words."""

    message: str = Field(description="Sinch's newest log message, or a callback's `comments`.")
    state: str | None = Field(description="The state the message was written for.")
    at: ApiTime | None = Field(description="Sinch's time of the message.")


class RegistrationView(ApiModel):
    """A registration's answer without Sinch's document: what the change feed carries."""

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
    created_at: ApiTime
    updated_at: ApiTime
    sender_ids: list[str] = Field(
        description="Every sender ID the registration asks for, in Sinch's order."
    )
    market_code: str | None = Field(
        description="The market (ISO 3166 alpha-2): the document's own `marketCode`, else its "
        "policy's market from Sinch's market details; null when neither says."
    )
    policy_id: str | None
    tags: list[str]
    eta_date: date | None = Field(description="Sinch's estimated date of completion.")
    price: dict[str, Any] | None = Field(description="Sinch's `price` object, as sent.")
    status_since: ApiTime | None = Field(
        description="Sinch's time at which the registration entered its current `status`."
    )
    reason: ReasonOut | None = Field(
        description="Why it is in its status (REJECTED, PENDING, ON_HOLD, ...): Sinch's newest "
        "log entry, or the comments of the callback that moved it; null when Sinch has said none."
    )

    @model_validator(mode="before")
    @classmethod
    def _reason_from_row(cls, data: Any) -> Any:
        # A row keeps the reason in three columns; the answer nests them.
        if isinstance(data, dict) or not hasattr(data, "reason_message"):
            return data
        fields = {name: getattr(data, name) for name in cls.model_fields if name != "reason"}
        message = data.reason_message
        fields["reason"] = (
            None
            if message is None
            else ReasonOut(message=message, state=data.reason_state, at=data.reason_at)
        )
        return fields


class RegistrationOut(RegistrationView):
    """The local copy of a registration, with its facts (docs/api.md, Registration facts)."""

    sinch: dict[str, Any] | None = Field(
        description="The last full document fetched from Sinch, exactly as Sinch sent it."
    )


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
