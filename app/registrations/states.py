"""Registration states and the transition table. Pure data: no I/O.

Sinch documents the states but no transitions (docs/sinch.md), so the table below is derived from
what each state means. It decides *trust*, not truth: an event whose transition is not listed is
never dropped, it is checked with a GET of the registration and the GET's answer is applied. So a
table that is too strict costs a GET, and one that is too loose could let a stale hint stand until
the next reconciliation: when in doubt, leave a transition out.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType


class State(StrEnum):
    DRAFT = "DRAFT"
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    PENDING = "PENDING"
    ON_HOLD = "ON_HOLD"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    PENDING_ATTACHMENTS = "PENDING_ATTACHMENTS"


S = State
_WAITING_ON_CUSTOMER = (S.PENDING, S.PENDING_ATTACHMENTS)

# Which states may directly follow each state.
# - Submission puts a registration in the queue; support picks it up (IN_PROGRESS) or parks it
#   (ON_HOLD), asks the customer for more (PENDING, PENDING_ATTACHMENTS), or decides at once.
# - Waiting states go back to the queue or to processing once resolved, or end rejected.
# - PENDING_APPROVAL (manual price) waits for an account manager: processing resumes or it ends.
# - APPROVED and REJECTED are final: anything after them (say, an approved registration that is
#   updated and goes back to IN_PROGRESS) is checked with a GET before it is believed.
TRANSITIONS: MappingProxyType[State, frozenset[State]] = MappingProxyType(
    {
        S.DRAFT: frozenset({S.IN_QUEUE}),
        S.IN_QUEUE: frozenset(
            {S.IN_PROGRESS, S.ON_HOLD, S.PENDING_APPROVAL, *_WAITING_ON_CUSTOMER, S.REJECTED}
        ),
        S.IN_PROGRESS: frozenset(
            {S.APPROVED, S.REJECTED, S.ON_HOLD, S.PENDING_APPROVAL, *_WAITING_ON_CUSTOMER}
        ),
        S.PENDING: frozenset({S.IN_QUEUE, S.IN_PROGRESS, S.REJECTED}),
        S.PENDING_ATTACHMENTS: frozenset({S.IN_QUEUE, S.IN_PROGRESS, S.REJECTED}),
        S.ON_HOLD: frozenset({S.IN_QUEUE, S.IN_PROGRESS, *_WAITING_ON_CUSTOMER, S.REJECTED}),
        S.PENDING_APPROVAL: frozenset({S.IN_PROGRESS, S.APPROVED, S.REJECTED}),
        S.APPROVED: frozenset(),
        S.REJECTED: frozenset(),
    }
)

FINAL_STATES = frozenset(state for state, following in TRANSITIONS.items() if not following)


def known_state(value: str) -> State | None:
    """The `State` named `value`, or None for a state this service does not know (yet)."""
    try:
        return State(value)
    except ValueError:
        return None


def is_allowed(current: str, following: str) -> bool:
    """True when the table lets `following` directly follow `current` (both must be known)."""
    before, after = known_state(current), known_state(following)
    return before is not None and after is not None and after in TRANSITIONS[before]


class Action(StrEnum):
    """What the customer must do for a registration to move on (`needs_action`)."""

    UPDATE = "update"
    """PENDING: change what Sinch asked about and update the registration (PUT)."""
    UPLOAD_ATTACHMENTS = "upload_attachments"
    """PENDING_ATTACHMENTS: upload the mandatory attachments still missing."""
    SUBMIT_AGAIN = "submit_again"
    """REJECTED: final at Sinch; read why, and submit a new registration."""


NEEDS_ACTION: MappingProxyType[State, Action] = MappingProxyType(
    {
        S.PENDING: Action.UPDATE,
        S.PENDING_ATTACHMENTS: Action.UPLOAD_ATTACHMENTS,
        S.REJECTED: Action.SUBMIT_AGAIN,
    }
)
"""The states that wait on the customer, and what each asks (`?needsAction=true` lists them)."""


def needs_action(status: str) -> Action | None:
    """What a registration in `status` asks of the customer; None when it asks nothing."""
    state = known_state(status)
    return None if state is None else NEEDS_ACTION.get(state)
