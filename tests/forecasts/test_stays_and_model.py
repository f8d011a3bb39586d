"""Stays and decision clocks from logs and history, bins, and a registration's forecast (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.forecasts import model
from app.forecasts.model import Basis, bin_of, lower_edge, upper_edge
from app.forecasts.stays import Clock, Entry, clock_of, log_entries, stays_of, timeline

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def test_logs_before_the_service_knew_the_registration_count_too() -> None:
    document = {
        "logs": [
            # Sinch's order is unknown: newest first here.
            {"registrationState": "IN_PROGRESS", "createTime": "2026-03-04T09:00:00"},
            {"registrationState": "IN_QUEUE", "createTime": "2026-03-02T09:00:00"},
            {"registrationState": "IN_QUEUE", "createTime": "2026-03-03T09:00:00", "message": "x"},
            {"registrationState": 7, "createTime": "2026-03-03T09:00:00"},
            {"createTime": "2026-03-03T09:00:00"},
            "junk",
        ]
    }
    # The service first heard of it by a callback on day 5 (IN_PROGRESS -> PENDING), then the
    # customer answered on day 9.
    history = [Entry("PENDING", T0 + 5 * DAY), Entry("IN_PROGRESS", T0 + 9 * DAY)]
    entries = timeline([*log_entries(document), *history])
    assert [e.status for e in entries] == ["IN_QUEUE", "IN_PROGRESS", "PENDING", "IN_PROGRESS"]
    stays = stays_of(entries)
    assert [(s.status, s.entered_at, s.left_at) for s in stays] == [
        ("IN_QUEUE", T0, T0 + 2 * DAY),  # the repeated IN_QUEUE log is the same stay
        ("IN_PROGRESS", T0 + 2 * DAY, T0 + 5 * DAY),
        ("PENDING", T0 + 5 * DAY, T0 + 9 * DAY),
        ("IN_PROGRESS", T0 + 9 * DAY, None),
    ]
    clock = clock_of(entries)
    assert clock == Clock(T0, None, None, 4 * 86_400.0, None)
    # On day 12: 12 days since submission, 4 of them waiting on the customer.
    assert clock.seconds_at(T0 + 12 * DAY) == (8 * 86_400.0, 4 * 86_400.0)


def test_a_decision_ends_the_clock_and_final_states_are_not_stays() -> None:
    entries = timeline(
        [
            Entry("DRAFT", T0 - DAY),
            Entry("IN_QUEUE", T0),
            Entry("PENDING_ATTACHMENTS", T0 + DAY),
            Entry("IN_QUEUE", T0 + 3 * DAY),
            Entry("REJECTED", T0 + 4 * DAY),
        ]
    )
    assert [s.status for s in stays_of(entries)] == [
        "DRAFT",
        "IN_QUEUE",
        "PENDING_ATTACHMENTS",
        "IN_QUEUE",
    ]
    clock = clock_of(entries)
    assert (clock.submitted_at, clock.decided_at, clock.outcome) == (T0, T0 + 4 * DAY, "REJECTED")
    # Long after: still 2 days on Sinch, 2 on the customer.
    assert clock.seconds_at(T0 + 100 * DAY) == (2 * 86_400.0, 2 * 86_400.0)


def test_waiting_on_the_customer_now_stops_sinchs_clock() -> None:
    clock = clock_of(timeline([Entry("IN_QUEUE", T0), Entry("PENDING", T0 + DAY)]))
    assert clock.waiting_on_customer_since == T0 + DAY
    assert clock.seconds_at(T0 + 10 * DAY) == (86_400.0, 9 * 86_400.0)


def test_never_submitted_has_no_clock() -> None:
    clock = clock_of(timeline([Entry("DRAFT", T0)]))
    assert clock.submitted_at is None
    assert clock.seconds_at(T0 + DAY) == (0.0, 0.0)


@given(st.floats(min_value=0, max_value=10 * 365 * 86_400.0))
def test_a_length_lies_in_its_bin(seconds: float) -> None:
    k = bin_of(seconds)
    assert lower_edge(k) <= seconds * (1 + 1e-12)
    assert seconds < upper_edge(k) * (1 + 1e-12)


def _decisions(days: list[float], outcome: int = model.APPROVED) -> list[tuple[int, int, float]]:
    return [(bin_of(d * 86_400), outcome, 1.0) for d in days]


def test_quantiles_err_late_by_at_most_a_bin() -> None:
    q = model.quantiles(_decisions([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    assert q.samples == 10
    assert q.open == 0
    assert q.p50 is not None
    assert 5 * 86_400 <= q.p50 <= 5 * 86_400 * 1.1
    assert q.p95 is not None
    assert 10 * 86_400 <= q.p95 <= 10 * 86_400 * 1.1


def test_forecast_from_history_given_the_wait_so_far() -> None:
    # 30 decisions: 1..30 days on Sinch's clock, every third one rejected.
    bins = [
        (bin_of(d * 86_400), model.REJECTED if d % 3 == 0 else model.APPROVED, 1.0)
        for d in range(1, 31)
    ]
    now = T0 + 10 * DAY
    clock = Clock(T0, None, None, 0.0, None)  # 10 days waiting on Sinch
    forecast = model.forecast(clock, bins, None, now)
    assert forecast.basis is Basis.HISTORY
    assert forecast.samples == 30
    assert not forecast.overdue
    assert forecast.decision_p50 is not None
    assert forecast.decision_p85 is not None
    # Of the 20 decided after day 10, half by about day 20: some 10 days from now.
    assert now + 9 * DAY <= forecast.decision_p50 <= now + 12 * DAY
    assert forecast.decision_p50 <= forecast.decision_p85
    # 20 left after day 10, 7 of them rejected (12, 15, ... 30): 13/20 approved.
    assert forecast.approval_chance == pytest.approx(13 / 20, abs=0.06)
    # Past the market's p85 (about day 26): overdue.
    late = model.forecast(clock, bins, None, T0 + 28 * DAY)
    assert late.overdue
    # Older than every decided one: no figure, no chance, but overdue.
    oldest = model.forecast(clock, bins, None, T0 + 40 * DAY)
    assert oldest.overdue
    assert (oldest.decision_p50, oldest.decision_p85, oldest.approval_chance) == (None, None, None)


def test_too_few_samples_say_so_and_fall_back_to_sinchs_eta() -> None:
    bins = _decisions([1, 2, 3])
    clock = Clock(T0, None, None, 0.0, None)
    nothing = model.forecast(clock, bins, None, T0 + DAY)
    assert (nothing.basis, nothing.samples) == (Basis.TOO_FEW_SAMPLES, 3)
    assert (nothing.decision_p50, nothing.decision_p85, nothing.overdue) == (None, None, False)
    eta = date(2026, 3, 5)
    on_time = model.forecast(clock, bins, eta, T0 + DAY)
    assert on_time.basis is Basis.SINCH_ETA
    assert on_time.decision_p50 == datetime(2026, 3, 6, tzinfo=UTC)
    assert on_time.decision_p85 is None
    assert not on_time.overdue
    assert model.forecast(clock, bins, eta, datetime(2026, 3, 6, tzinfo=UTC)).overdue


def test_eta_passed_is_overdue_even_when_history_says_not_yet() -> None:
    bins = _decisions([float(d) for d in range(1, 31)])
    clock = Clock(T0, None, None, 0.0, None)
    forecast = model.forecast(clock, bins, date(2026, 3, 2), T0 + 2 * DAY)
    assert forecast.basis is Basis.HISTORY
    assert forecast.overdue


def test_a_decided_registration_is_not_forecast() -> None:
    clock = Clock(T0, T0 + DAY, "APPROVED", 0.0, None)
    forecast = model.forecast(clock, [], None, T0 + 5 * DAY)
    assert forecast.basis is Basis.DECIDED
    assert forecast.decision_p50 == T0 + DAY
    assert not forecast.overdue
