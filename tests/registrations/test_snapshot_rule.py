"""When a snapshot replaces the local registration: the rule of app/registrations/service.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.registrations.service import snapshot_wins

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)

moments = st.integers(-5, 5).map(lambda n: T0 + n * SECOND)
maybe = st.none() | moments
# Sinch times may be anything a callback claimed: the far future included.
claims = st.none() | moments | st.just(T0.replace(year=2036))


def test_a_later_fetch_beats_any_callback_applied_before_it_whatever_it_claimed() -> None:
    assert snapshot_wins(
        fetched_at=T0,
        update_time=T0 - 60 * SECOND,
        last_synced_at=T0 - 60 * SECOND,
        callback_applied_at=T0 - SECOND,
        status_changed_at=T0.replace(year=2036),
    )


def test_an_earlier_fetch_loses_to_a_later_one() -> None:
    assert not snapshot_wins(
        fetched_at=T0,
        update_time=T0 + SECOND,
        last_synced_at=T0 + SECOND,
        callback_applied_at=None,
        status_changed_at=None,
    )


def test_a_callback_applied_during_the_fetch_keeps_its_newer_claim() -> None:
    during = dict(fetched_at=T0, last_synced_at=None, callback_applied_at=T0 + SECOND)
    assert not snapshot_wins(**during, update_time=T0 - SECOND, status_changed_at=T0)
    # The same whole second: which came first is unknown, and the callback is the fresher news.
    assert not snapshot_wins(**during, update_time=T0, status_changed_at=T0)
    assert snapshot_wins(**during, update_time=T0 + SECOND, status_changed_at=T0)
    assert not snapshot_wins(**during, update_time=None, status_changed_at=T0)


@given(
    fetched_at=moments,
    update_time=claims,
    last_synced_at=maybe,
    callback_applied_at=maybe,
    status_changed_at=claims,
)
def test_properties(
    fetched_at: datetime,
    update_time: datetime | None,
    last_synced_at: datetime | None,
    callback_applied_at: datetime | None,
    status_changed_at: datetime | None,
) -> None:
    wins = snapshot_wins(
        fetched_at=fetched_at,
        update_time=update_time,
        last_synced_at=last_synced_at,
        callback_applied_at=callback_applied_at,
        status_changed_at=status_changed_at,
    )
    later_fetch_applied = last_synced_at is not None and last_synced_at > fetched_at
    hints_all_before = callback_applied_at is None or callback_applied_at <= fetched_at
    if later_fetch_applied:
        assert not wins
    elif hints_all_before:
        # The truth as of the fetch: no claimed time can outrank it.
        assert wins
    else:
        # A callback applied after the fetch began stands unless Sinch's document is later.
        assert wins == (
            update_time is not None
            and status_changed_at is not None
            and update_time > status_changed_at
        )
