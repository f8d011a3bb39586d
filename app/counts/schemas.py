"""Documents of `GET /v1/counts`."""

from __future__ import annotations

from pydantic import Field

from app.core.schemas import ApiModel, ApiTime
from app.counts.service import Counts


class HourOut(ApiModel):
    start: ApiTime = Field(description="The UTC hour's start.")
    callbacks_kept: int = Field(
        description="Callbacks kept as new events that arrived in this hour (duplicates are not "
        "new events); events pruned since are no longer counted."
    )
    events_finished: int = Field(
        description="Kept events whose processing ended (processed, failed or invalid) in this "
        "hour."
    )
    mean_lag_seconds: float | None = Field(
        description="Their mean time from arrival to the end of processing; null when none."
    )


class CountsOut(ApiModel):
    """Exact counts, kept as the rows change (never counted at request time)."""

    events_by_state: dict[str, int] = Field(
        description="Kept callback events by `state` (every state, zeros included)."
    )
    registrations_by_status: dict[str, int] = Field(
        description="Registrations by `status` (the statuses at least one registration holds)."
    )
    hours: list[HourOut] = Field(
        description="The last 24 UTC hours, oldest first; the last one is the current hour."
    )

    @classmethod
    def of(cls, counts: Counts) -> CountsOut:
        return cls(
            events_by_state=counts.events_by_state,
            registrations_by_status=counts.registrations_by_status,
            hours=[
                HourOut(
                    start=hour.start,
                    callbacks_kept=hour.received,
                    events_finished=hour.finished,
                    mean_lag_seconds=hour.mean_lag_seconds,
                )
                for hour in counts.hours
            ],
        )
