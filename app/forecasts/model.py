"""The read model's arithmetic: stays binned by length, their quantiles, and a registration's
forecast. Pure.

Stays are kept as counts per bin of length (a histogram), not one by one, so that a figure over
any number of stays costs the same to compute: bin `k` >= 1 holds lengths in
[60 * 1.1^(k-1), 60 * 1.1^k) seconds, bin 0 those under a minute. A stay that ended is counted at
its bin's upper edge (it had surely ended by then) and one still running at its lower edge (it
had surely lasted that long), so a quantile read from bins is at most 10 % above the exact one,
never below: "decided by" errs late, never early.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Final

from app.forecasts.estimators import (
    Observation,
    cumulative_incidence,
    kaplan_meier,
    survival_quantile,
    value_at,
)
from app.forecasts.stays import Clock

FIRST_EDGE: Final = 60.0
RATIO: Final = 1.1
MIN_SAMPLES: Final = 20
"""Fewer decided registrations than this in a market and type: no figure of ours is shown, only
Sinch's `etaDate` (when it gave one) and the sample size."""

STILL_OPEN, APPROVED, REJECTED = 0, 1, 2
OUTCOME_CODES: Final[Mapping[str, int]] = {"APPROVED": APPROVED, "REJECTED": REJECTED}


class Basis(StrEnum):
    """What a forecast stands on."""

    HISTORY = "history"
    """The market's and type's decisions seen here (at least `MIN_SAMPLES`)."""
    SINCH_ETA = "sinch-eta"
    """Too few decisions seen: Sinch's `etaDate` alone."""
    TOO_FEW_SAMPLES = "too-few-samples"
    """Too few decisions seen and no `etaDate`: no date is given."""
    DECIDED = "decided"
    NOT_SUBMITTED = "not-submitted"


def bin_of(seconds: float) -> int:
    """The bin of a stay of this length (module docstring)."""
    if seconds < FIRST_EDGE:
        return 0
    return 1 + math.floor(math.log(seconds / FIRST_EDGE) / math.log(RATIO))


def upper_edge(k: int) -> float:
    return FIRST_EDGE * RATIO**k


def lower_edge(k: int) -> float:
    return 0.0 if k == 0 else FIRST_EDGE * RATIO ** (k - 1)


def observations(bins: Iterable[tuple[int, int, float]]) -> list[Observation]:
    """Observations from (bin, outcome, count): ended at the upper edge, open at the lower."""
    return [
        Observation(lower_edge(k) if outcome == STILL_OPEN else upper_edge(k), outcome, count)
        for k, outcome, count in bins
    ]


@dataclass(frozen=True, slots=True)
class Quantiles:
    p50: int | None
    p85: int | None
    p95: int | None
    samples: int
    """Stays that ended."""
    open: int
    """Stays still running."""


def quantiles(bins: Iterable[tuple[int, int, float]]) -> Quantiles:
    """p50, p85 and p95 of the stays' length in whole seconds, by Kaplan-Meier over the bins
    (None where the data cannot tell: too many still running, or none at all)."""
    observed = observations(bins)
    curve = kaplan_meier(observed)

    def at(q: float) -> int | None:
        value = survival_quantile(curve, q)
        return None if value is None else math.ceil(value)

    ended = sum(o.weight for o in observed if o.outcome != STILL_OPEN)
    still = sum(o.weight for o in observed if o.outcome == STILL_OPEN)
    return Quantiles(at(0.5), at(0.85), at(0.95), round(ended), round(still))


@dataclass(frozen=True, slots=True)
class Forecast:
    decision_p50: datetime | None
    decision_p85: datetime | None
    overdue: bool
    basis: Basis
    samples: int
    """Decided registrations of the market and type the figures stand on."""
    approval_chance: float | None
    """The chance it ends approved rather than rejected, given how long it has waited (Aalen-
    Johansen); None where the data cannot tell."""
    sinch_seconds: float
    customer_seconds: float
    waiting_on_customer: bool


def eta_deadline(eta: date) -> datetime:
    """Sinch gives a date: the decision is late once that UTC day is over."""
    return datetime.combine(eta + timedelta(days=1), time(), tzinfo=UTC)


def forecast(
    clock: Clock,
    bins: Iterable[tuple[int, int, float]],
    eta: date | None,
    now: datetime,
) -> Forecast:
    """When the registration will be decided, as the issue asks: p50 and p85 of the remaining wait
    on Sinch given the wait so far (Kaplan-Meier over its market's and type's decision clocks,
    conditioned on surviving that long); overdue once past the market's p85 or Sinch's
    `etaDate`. With fewer than `MIN_SAMPLES` decisions, Sinch's `etaDate` or nothing."""
    sinch, customer = clock.seconds_at(now)
    waiting_on_customer = clock.waiting_on_customer_since is not None and clock.decided_at is None
    observed = observations(bins)
    samples = round(sum(o.weight for o in observed if o.outcome != STILL_OPEN))

    def made(
        basis: Basis,
        p50: datetime | None = None,
        p85: datetime | None = None,
        overdue: bool = False,
        chance: float | None = None,
    ) -> Forecast:
        return Forecast(
            p50, p85, overdue, basis, samples, chance, sinch, customer, waiting_on_customer
        )

    if clock.decided_at is not None:
        return made(
            Basis.DECIDED,
            clock.decided_at,
            clock.decided_at,
            chance=1.0 if clock.outcome == "APPROVED" else 0.0,
        )
    if clock.submitted_at is None:
        return made(Basis.NOT_SUBMITTED)
    eta_passed = eta is not None and now >= eta_deadline(eta)
    if samples < MIN_SAMPLES:
        if eta is None:
            return made(Basis.TOO_FEW_SAMPLES)
        return made(Basis.SINCH_ETA, eta_deadline(eta), None, eta_passed)
    survival = kaplan_meier(observed)
    approved = cumulative_incidence(observed, APPROVED)

    def by(q: float) -> datetime | None:
        total = survival_quantile(survival, q, elapsed=sinch)
        return None if total is None else now + timedelta(seconds=max(0.0, total - sinch))

    p85_overall = survival_quantile(survival, 0.85)
    overdue = eta_passed or (p85_overall is not None and sinch > p85_overall)
    still = value_at(survival, sinch, start=1.0)
    chance = None
    # Only decisions seen after this wait tell how it will end: none (it has waited longer than
    # every decided one), and the data cannot tell.
    later = any(step.time > sinch for step in survival)
    if still > 0 and later:
        remaining = (approved[-1].value if approved else 0.0) - value_at(approved, sinch, start=0.0)
        chance = min(1.0, max(0.0, remaining / still))
    return made(Basis.HISTORY, by(0.5), by(0.85), overdue, chance)
