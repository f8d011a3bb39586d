"""The survival estimators: hand-computed cases, then lifelines (the reference, tests only) on
generated data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lifelines import AalenJohansenFitter, KaplanMeierFitter

from app.forecasts.estimators import (
    Observation,
    Step,
    cumulative_incidence,
    incidence_quantile,
    kaplan_meier,
    survival_quantile,
    value_at,
)

APPROVED, REJECTED = 1, 2


def stays(*pairs: tuple[float, int]) -> list[Observation]:
    return [Observation(duration, outcome) for duration, outcome in pairs]


def test_kaplan_meier_by_hand() -> None:
    # 5 at risk: t=1 one ends (4/5); t=2 one ends, one still running (0.8*3/4); t=3 one of the two
    # left ends (0.6*1/2); the last runs on past t=4.
    curve = kaplan_meier(stays((1, 1), (2, 1), (2, 0), (3, 1), (4, 0)))
    assert curve == [Step(1, 0.8), Step(2, pytest.approx(0.6)), Step(3, pytest.approx(0.3))]
    assert survival_quantile(curve, 0.5) == 3
    assert survival_quantile(curve, 0.2) == 1
    # 70 % have ended by t=3 and the rest still run: nobody can say when 85 % will have.
    assert survival_quantile(curve, 0.85) is None


def test_running_stays_are_not_ignored_nor_counted_as_ended() -> None:
    # Two quick approvals and three stays still running at 10 days: ignoring the running ones
    # would put the median at 1 day; the data says only that it is beyond 10 days.
    day = 86_400.0
    observations = stays((day, 1), (day, 1), (10 * day, 0), (10 * day, 0), (10 * day, 0))
    assert survival_quantile(kaplan_meier(observations), 0.5) is None
    assert survival_quantile(kaplan_meier(observations), 0.4) == day


def test_weights_are_repeated_stays() -> None:
    weighted = [Observation(1, 1, 2), Observation(3, 0, 1), Observation(5, 1, 3)]
    repeated = stays((1, 1), (1, 1), (3, 0), (5, 1), (5, 1), (5, 1))
    assert kaplan_meier(weighted) == kaplan_meier(repeated)


def test_conditional_quantile_given_the_time_already_waited() -> None:
    # Ends at 1, 2, 3, 4, 5, 6, 7, 8 (S steps down by 1/8). Having waited 4: half of the 4 left
    # end by 6.
    curve = kaplan_meier(stays(*((t, 1) for t in range(1, 9))))
    assert survival_quantile(curve, 0.5) == 4
    assert survival_quantile(curve, 0.5, elapsed=4) == 6
    assert survival_quantile(curve, 0.5, elapsed=4.5) == 6
    # Older than every stay seen: the data cannot tell.
    assert survival_quantile(curve, 0.5, elapsed=8) is None


def test_competing_outcomes_by_hand() -> None:
    # t=1 approved (5 at risk), t=2 rejected (4), t=3 approved (3), t=4 running, t=5 rejected (1).
    observations = stays((1, APPROVED), (2, REJECTED), (3, APPROVED), (4, 0), (5, REJECTED))
    approved = cumulative_incidence(observations, APPROVED)
    # F(1) = 1 * 1/5; F(3) = 0.2 + S(3-) * 1/3 with S(3-) = 4/5 * 3/4 = 0.6.
    assert approved == [Step(1, 0.2), Step(3, pytest.approx(0.4))]
    rejected = cumulative_incidence(observations, REJECTED)
    # F(2) = 0.8 * 1/4; F(5) = 0.2 + S(5-) * 1/1 with S(5-) = 0.6 * 2/3 = 0.4.
    assert rejected == [Step(2, pytest.approx(0.2)), Step(5, pytest.approx(0.6))]
    # Approval by t=3 is 0.4, not 1 - S(3) = 0.6 (a rejection happened too).
    assert value_at(approved, 3, start=0.0) == pytest.approx(0.4)
    assert 1 - value_at(kaplan_meier(observations), 3, start=1.0) == pytest.approx(0.6)
    assert incidence_quantile(approved, 0.3) == 3
    # No more than 40 % approved as far as the data shows.
    assert incidence_quantile(approved, 0.5) is None


def test_no_stays_tell_nothing() -> None:
    assert kaplan_meier([]) == []
    assert survival_quantile([], 0.5) is None
    assert incidence_quantile(cumulative_incidence([], APPROVED), 0.5) is None


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        survival_quantile([], 1.0)
    with pytest.raises(ValueError, match="share"):
        incidence_quantile([], 0.0)
    with pytest.raises(ValueError, match="outcome 0"):
        cumulative_incidence([], 0)
    with pytest.raises(ValueError, match="less than nothing"):
        kaplan_meier([Observation(-1, 1)])


# Distinct durations: lifelines' Aalen-Johansen jitters tied times, which would make the
# comparison about its jitter rather than the estimator.
_samples = st.lists(
    st.tuples(st.integers(1, 10_000), st.sampled_from([0, APPROVED, REJECTED])),
    min_size=1,
    max_size=60,
    unique_by=lambda pair: pair[0],
)
_QUANTILES = (0.5, 0.85, 0.95)


def _reference_quantile(times: np.ndarray, values: np.ndarray, level: float) -> float | None:
    hits = times[values <= level + 1e-9]
    return float(hits[0]) if hits.size else None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_samples)
def test_kaplan_meier_matches_lifelines(sample: list[tuple[int, int]]) -> None:
    durations = np.array([float(d) for d, _ in sample])
    observed = np.array([outcome != 0 for _, outcome in sample])
    fitter = KaplanMeierFitter().fit(durations, observed)
    reference = fitter.survival_function_["KM_estimate"]
    curve = kaplan_meier([Observation(float(d), o) for d, o in sample])
    for step in curve:
        assert step.value == pytest.approx(reference.loc[step.time], abs=1e-9)
    times, values = reference.index.to_numpy(), reference.to_numpy()
    for q in _QUANTILES:
        assert survival_quantile(curve, q) == _reference_quantile(times, values, 1 - q)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_samples.filter(lambda sample: any(outcome == APPROVED for _, outcome in sample)))
def test_aalen_johansen_matches_lifelines(sample: list[tuple[int, int]]) -> None:
    durations = np.array([float(d) for d, _ in sample])
    outcomes = np.array([outcome for _, outcome in sample])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter = AalenJohansenFitter(calculate_variance=False).fit(
            durations, outcomes, event_of_interest=APPROVED
        )
    reference = fitter.cumulative_density_[f"CIF_{APPROVED}"]
    curve = cumulative_incidence([Observation(float(d), o) for d, o in sample], APPROVED)
    for time, value in reference.items():
        assert value_at(curve, float(time), start=0.0) == pytest.approx(value, abs=1e-9)
    for q in _QUANTILES:
        hits = reference.index.to_numpy()[reference.to_numpy() >= q - 1e-9]
        expected = float(hits[0]) if hits.size else None
        assert incidence_quantile(curve, q) == expected
