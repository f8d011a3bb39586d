"""Survival estimators for stays in a state: Kaplan-Meier and Aalen-Johansen. Pure, no I/O.

A stay is how long a registration spent in one state (or waited for a decision). A stay still
running is right-censored: we know it lasted at least its age so far, not how long it will last.
Dropping those stays would bias every figure towards the fast ones (the slow ones are exactly
those still open), and counting them as ended would bias it towards the short ones: Kaplan-Meier
counts each as "at risk" until its age and no further.

A stay ends in one of several ways (approval, rejection): competing outcomes. The probability of
being approved by day N is not one minus the survival (that is the probability of *any* decision
by day N); it is the cumulative incidence of approval, estimated by Aalen-Johansen.

Every function takes weighted observations, so that stays binned into a histogram (the read model
of app/forecasts/, which holds counts, not stays) and single stays go through the same code.
Quantiles are None where the data cannot tell: when the curve never falls (rises) that far
because the longest stays are still running, or there are none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

_EPSILON: Final = 1e-9
"""Products of fractions land a hair off their exact value (0.5 as 0.5000000000000001): a level
reached within this counts as reached, as it would with exact arithmetic."""


@dataclass(frozen=True, slots=True)
class Observation:
    """`weight` stays of length `duration` (seconds); `outcome` 0 for stays still running
    (censored), else the code of how they ended (e.g. 1 approved, 2 rejected)."""

    duration: float
    outcome: int
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Step:
    """The curve's value from `time` on (until the next step)."""

    time: float
    value: float


def _grouped(observations: Iterable[Observation]) -> list[tuple[float, dict[int, float]]]:
    """(time, {outcome: weight}) for each distinct duration, ascending; outcome 0 is censored."""
    by_time: dict[float, dict[int, float]] = {}
    for observation in observations:
        if observation.weight <= 0:
            continue
        if observation.duration < 0:
            raise ValueError("a stay cannot last less than nothing")
        outcomes = by_time.setdefault(observation.duration, {})
        outcomes[observation.outcome] = outcomes.get(observation.outcome, 0.0) + observation.weight
    return sorted(by_time.items())


def kaplan_meier(observations: Iterable[Observation]) -> list[Step]:
    """The survival curve S(t), the probability that a stay lasts beyond t, as steps at each
    time a stay ended (any outcome but 0). S is 1 before the first step. Stays censored at a time
    when others end are counted at risk at that time (the usual convention, and lifelines')."""
    grouped = _grouped(observations)
    at_risk = sum(sum(outcomes.values()) for _, outcomes in grouped)
    survival = 1.0
    steps: list[Step] = []
    for time, outcomes in grouped:
        ended = sum(weight for outcome, weight in outcomes.items() if outcome != 0)
        if ended > 0:
            survival *= 1.0 - ended / at_risk
            steps.append(Step(time, survival))
        at_risk -= sum(outcomes.values())
    return steps


def cumulative_incidence(observations: Iterable[Observation], outcome: int) -> list[Step]:
    """The Aalen-Johansen cumulative incidence F(t) of `outcome`: the probability that a stay has
    ended with that outcome by t, the other outcomes competing. F is 0 before the first step; its
    limit is the share of stays that end that way, not 1."""
    if outcome == 0:
        raise ValueError("outcome 0 is a stay still running, not an outcome")
    grouped = _grouped(observations)
    at_risk = sum(sum(outcomes.values()) for _, outcomes in grouped)
    survival = 1.0  # S(t-), of any outcome
    incidence = 0.0
    steps: list[Step] = []
    for time, outcomes in grouped:
        ended = sum(weight for code, weight in outcomes.items() if code != 0)
        if outcomes.get(outcome, 0.0) > 0:
            incidence += survival * outcomes[outcome] / at_risk
            steps.append(Step(time, incidence))
        if ended > 0:
            survival *= 1.0 - ended / at_risk
        at_risk -= sum(outcomes.values())
    return steps


def survival_quantile(curve: Sequence[Step], q: float, *, elapsed: float = 0.0) -> float | None:
    """The time by which a share `q` of stays has ended: the smallest t with S(t) <= 1 - q.

    With `elapsed`, the same for a stay known to have lasted that long already: the smallest
    t >= elapsed with S(t) <= (1 - q) * S(elapsed). None when the curve never falls that far.
    """
    if not 0.0 < q < 1.0:
        raise ValueError("q is a share strictly between 0 and 1")
    level = (1.0 - q) * value_at(curve, elapsed, start=1.0)
    if level <= 0.0:
        return None  # every stay seen ended before this one's age: the data cannot tell
    for step in curve:
        if step.time >= elapsed and step.value <= level + _EPSILON:
            return step.time
    return None


def incidence_quantile(curve: Sequence[Step], q: float) -> float | None:
    """The time by which a share `q` of all stays has ended with the curve's outcome: the
    smallest t with F(t) >= q. None when F never rises that far (fewer than `q` end that way as
    far as the data shows)."""
    if not 0.0 < q < 1.0:
        raise ValueError("q is a share strictly between 0 and 1")
    for step in curve:
        if step.value >= q - _EPSILON:
            return step.time
    return None


def value_at(curve: Sequence[Step], time: float, *, start: float) -> float:
    """The curve's value at `time` (right-continuous steps); `start` before the first step."""
    value = start
    for step in curve:
        if step.time > time:
            break
        value = step.value
    return value
