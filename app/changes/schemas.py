"""Documents of the change feed (docs/api.md, Change feed), and the registration's image a change
carries, which the registration's own answer extends."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

from pydantic import Field, model_validator

from app.changes.repository import IMAGE_COLUMNS
from app.core.models import ChangeKind, ChangeSource, RegistrationChange
from app.core.schemas import ApiModel, ApiTime


class ReasonOut(ApiModel):
    """Why the registration stands where it does, in Sinch's words."""

    message: str = Field(description="Sinch's newest log message, or a callback's `comments`.")
    state: str | None = Field(description="The state the message was written for.")
    at: ApiTime | None = Field(description="Sinch's time of the message.")


class RegistrationView(ApiModel):
    """A registration's answer without Sinch's document, as a change copies it (`IMAGE_COLUMNS`):
    what the change feed carries; `RegistrationOut` adds the document."""

    id: str
    project_id: str = Field(description="The Sinch project it belongs to.")
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
        # A field the row lacks (an answer's `forecast`, kept in a table of its own) keeps its
        # default.
        fields = {
            name: getattr(data, name)
            for name in cls.model_fields
            if name != "reason" and hasattr(data, name)
        }
        message = data.reason_message
        fields["reason"] = (
            None
            if message is None
            else ReasonOut(message=message, state=data.reason_state, at=data.reason_at)
        )
        return fields


class ChangeOut(ApiModel):
    """One change of a registration's answer."""

    seq: int = Field(description="The change's place in the feed: increasing, without gaps.")
    kind: ChangeKind = Field(
        description="`status` when the status changed (facts may have too), `details` when only "
        "facts did, `overdue` when the registration has waited past its market's p85 or Sinch's "
        "`etaDate` (recorded once, by the forecasts cron; the image is the registration as then), "
        "`policy_changed` when Sinch changed the registration's policy (recorded by the catalog "
        "refresh, `fromStatus` = `toStatus`; GET /v1/policies/{policyId} says what changed)."
    )
    registration_id: str
    project_id: str = Field(description="The Sinch project it belongs to.")
    from_status: str | None = Field(description="Null when the registration was first learnt.")
    to_status: str
    at: ApiTime = Field(description="Sinch's time of the change.")
    source: ChangeSource
    recorded_at: ApiTime = Field(description="When this service recorded it (our clock).")
    registration: RegistrationView = Field(
        description="The registration's answer as of this change (as GET /v1/registrations/{id} "
        "answered then, without `sinch`)."
    )

    @classmethod
    def of(cls, row: RegistrationChange) -> ChangeOut:
        image = SimpleNamespace(
            id=row.registration_id,
            project_id=row.project_id,
            status=row.status,
            **{name: getattr(row, name) for name in IMAGE_COLUMNS},
        )
        assert row.seq is not None  # only numbered changes are served
        return cls(
            seq=row.seq,
            kind=ChangeKind(row.kind),
            registration_id=row.registration_id,
            project_id=row.project_id,
            from_status=row.from_status,
            to_status=row.status,
            at=row.at,
            source=ChangeSource(row.source),
            recorded_at=row.recorded_at,
            registration=RegistrationView.model_validate(image),
        )


class ChangePage(ApiModel):
    items: list[ChangeOut]
    next_cursor: str = Field(
        description="Pass as `cursor` to read on; the same position when `items` is empty."
    )
