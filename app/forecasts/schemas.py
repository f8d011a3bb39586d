"""Documents of the time-in-state answers and of a registration's `forecast` (docs/api.md, "Time
in state and forecasts")."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import Field, model_validator

from app.core.models import DecisionCurve
from app.core.schemas import ApiModel, ApiTime, same_named
from app.forecasts.model import Basis


class DecisionBy(ApiModel):
    p50: ApiTime | None = Field(
        description="Half of the registrations that waited as long were decided by then; null "
        "where the data cannot tell."
    )
    p85: ApiTime | None = Field(description="85 % of them were decided by then; null likewise.")


class ForecastOut(ApiModel):
    """When the registration will be decided, from this service's own history of its market."""

    decision_by: DecisionBy = Field(
        description="With basis `history`: p50 and p85 of the decision time, given how long it "
        "has already waited on Sinch; `sinch-eta`: the end of Sinch's `etaDate` (p85 null); "
        "`decided`: the decision's time; otherwise both null."
    )
    overdue: bool = Field(
        description="It has waited on Sinch past its market's and type's p85, or past the end of "
        "Sinch's `etaDate`."
    )
    basis: Basis = Field(
        description="`history` (at least 20 decisions of its market and type seen here), "
        "`sinch-eta` (fewer, and Sinch gave an `etaDate`), `too-few-samples` (fewer, and no "
        "`etaDate`: no date is given), `decided`, `not-submitted`."
    )
    samples: int = Field(
        description="Decisions of its project's registrations of its market and type the figures "
        "stand on."
    )
    approval_chance: float | None = Field(
        description="The chance it ends approved rather than rejected, given its wait so far "
        "(competing outcomes, Aalen-Johansen); null where the data cannot tell."
    )
    waiting_on: str | None = Field(
        description="`sinch` or `customer` (PENDING, PENDING_ATTACHMENTS: Sinch waits for the "
        "customer, and its clock stands still); null once decided."
    )
    waiting_on_sinch_seconds: int = Field(
        description="Time since submission spent waiting on Sinch (to the decision, or to "
        "`computedAt`)."
    )
    waiting_on_customer_seconds: int = Field(
        description="Time since submission spent waiting on the customer."
    )
    computed_at: ApiTime = Field(description="When the worker computed this (our clock).")

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: Any) -> Any:
        # A `registration_forecasts` row holds the figures flat; the answer nests them.
        if isinstance(data, dict) or not hasattr(data, "decision_p50"):
            return data
        decided = data.decided_at is not None
        return {
            "decision_by": DecisionBy(p50=data.decision_p50, p85=data.decision_p85),
            "overdue": data.overdue,
            "basis": data.basis or Basis.NOT_SUBMITTED,
            "samples": data.samples,
            "approval_chance": data.approval_chance,
            "waiting_on": None
            if decided
            else ("customer" if data.waiting_on_customer_since is not None else "sinch"),
            "waiting_on_sinch_seconds": round(data.sinch_seconds),
            "waiting_on_customer_seconds": round(data.waited_customer_seconds),
            "computed_at": data.computed_at,
        }


class TimeInStateItem(ApiModel):
    project_id: str = Field(description="The Sinch project whose registrations these are.")
    market_code: str | None = Field(description="Null for registrations whose market is unknown.")
    registration_type: str | None
    status: str
    p50: int | None = Field(
        description="Seconds by which half of the stays in this state had ended (Kaplan-Meier: "
        "stays still running count as lasting at least their age); read from bins 10 % wide, so "
        "at most 10 % above the exact figure; null where the data cannot tell."
    )
    p85: int | None
    p95: int | None
    samples: int = Field(description="Stays that ended.")
    open: int = Field(description="Stays still running.")


class DecisionItem(ApiModel):
    """Per project, market and type: how long Sinch takes to decide, and how often its `etaDate`
    held."""

    project_id: str
    market_code: str | None
    registration_type: str | None
    p50: int | None = Field(
        description="Seconds waiting on Sinch (time waiting on the customer left out) from "
        "submission to a decision, for half of the registrations; null where the data cannot tell."
    )
    p85: int | None
    samples: int = Field(description="Registrations decided.")
    open: int = Field(description="Registrations still waiting.")
    approved_share: float | None = Field(
        description="The share that ends approved (Aalen-Johansen, rejections competing)."
    )
    eta_samples: int = Field(description="Decided registrations that had an `etaDate`.")
    eta_held_share: float | None = Field(
        description="Of those, the share decided by the end of their `etaDate` (the last one "
        "Sinch gave); null when none had one."
    )

    @classmethod
    def of(cls, curve: DecisionCurve) -> DecisionItem:
        """The curve's figures as answered; the `etaDate` share computed from its counts."""
        held = curve.eta_held / curve.eta_samples if curve.eta_samples else None
        return cls(**same_named(cls, curve, but=("eta_held_share",)), eta_held_share=held)


class TimeInStateOut(ApiModel):
    items: list[TimeInStateItem]
    since: date = Field(
        description="The window applied: stays that began on or after this day, the first of "
        "the month `since` fell in (the figures are kept per month)."
    )
    decisions: list[DecisionItem] = Field(
        description="Time to a decision per project, market and type, over every registration seen."
    )
    computed_at: ApiTime | None = Field(
        description="When the worker last computed the figures; null before its first run."
    )
