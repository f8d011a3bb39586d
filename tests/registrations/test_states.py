"""The transition table: every state covered, finals final, lookups total."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from app.registrations.states import FINAL_STATES, TRANSITIONS, State, is_allowed, known_state


def test_every_state_has_a_row_and_points_at_known_states() -> None:
    assert set(TRANSITIONS) == set(State)
    for following in TRANSITIONS.values():
        assert following <= set(State)


def test_approved_and_rejected_are_final_and_nothing_else_is() -> None:
    assert {State.APPROVED, State.REJECTED} == FINAL_STATES
    assert not is_allowed("APPROVED", "IN_PROGRESS")
    assert not is_allowed("REJECTED", "IN_QUEUE")


def test_the_ordinary_lifecycle_is_trusted() -> None:
    path = ["DRAFT", "IN_QUEUE", "IN_PROGRESS", "PENDING", "IN_PROGRESS", "APPROVED"]
    assert all(is_allowed(a, b) for a, b in itertools.pairwise(path))
    assert is_allowed("IN_PROGRESS", "REJECTED")
    assert is_allowed("PENDING_APPROVAL", "APPROVED")


def test_no_state_follows_itself_and_nothing_goes_back_to_draft() -> None:
    for state in State:
        assert not is_allowed(state, state)
        assert not is_allowed(state, State.DRAFT)


@given(st.text(), st.text())
def test_unknown_states_are_never_trusted_and_never_raise(a: str, b: str) -> None:
    if known_state(a) is None or known_state(b) is None:
        assert not is_allowed(a, b)
