"""Documents of the internal API about registrations (docs/api.md lists the fields)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.changes.schemas import RegistrationView
from app.core.models import HistorySource
from app.core.schemas import ApiModel, ApiTime
from app.forecasts.schemas import ForecastOut


class RegistrationOut(RegistrationView):
    """The local copy of a registration, with its facts (docs/api.md, Registration facts)."""

    sinch: dict[str, Any] | None = Field(
        description="The last full document fetched from Sinch, exactly as Sinch sent it."
    )
    forecast: ForecastOut | None = Field(
        default=None,
        description="When it will be decided, from this service's history of its market "
        "(computed by the worker every `FORECAST_INTERVAL_SECONDS`; null until its first run "
        "after the registration arrived). Not part of a change's image: it moves with time, "
        "not with changes; a change of kind `overdue` tells when it passes its due time.",
    )

    @classmethod
    def of(cls, row: object, forecast: object | None) -> RegistrationOut:
        """The answer of a `registrations` row with its `registration_forecasts` row (or None)."""
        answer = cls.model_validate(row)
        if forecast is None:
            return answer
        return answer.model_copy(update={"forecast": ForecastOut.model_validate(forecast)})


class RegistrationPage(ApiModel):
    items: list[RegistrationOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


class HistoryItem(ApiModel):
    """One status change applied to the registration."""

    project_id: str = Field(description="The Sinch project it belongs to.")

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
