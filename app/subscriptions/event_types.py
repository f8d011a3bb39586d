"""The catalog of the messages a subscription receives (`GET /v1/event-types`): each type's
version, what it means, and the JSON Schema of its `data`, generated from the pydantic models
that build the messages (so the schema cannot drift from what is sent)."""

from __future__ import annotations

from functools import cache
from typing import Any

from app.changes.schemas import ChangeOut
from app.core.models import ChangeKind
from app.subscriptions.delivery import EVENT_TYPE, PING_TYPE
from app.subscriptions.schemas import EventTypeOut, PingData

KINDS = tuple(kind.value for kind in ChangeKind)
"""The values of a subscription's `kinds` filter."""


def _schema(model: type[ChangeOut] | type[PingData]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True, mode="serialization")


@cache
def event_types() -> tuple[EventTypeOut, ...]:
    """Every message type, built once per process (the schemas never change while it runs)."""
    return (
        EventTypeOut(
            type=EVENT_TYPE,
            version=1,
            description="A registration's answer changed: `data` is the change feed's item. "
            "`kind` says what happened: `status` (the status moved from `fromStatus` to "
            "`toStatus`; facts may have changed too) or `details` (only facts changed, "
            "`fromStatus` = `toStatus`) or `overdue` (the registration has waited past its "
            "market's p85 or Sinch's `etaDate`; `fromStatus` = `toStatus`) or `policy_changed` "
            "(Sinch changed the registration's policy: GET /v1/policies/{policyId} lists what "
            "changed; `fromStatus` = `toStatus`). `registration` is "
            "the answer as of the change. "
            "Subscriptions choose kinds with their `kinds` filter.",
            schema_=_schema(ChangeOut),
        ),
        EventTypeOut(
            type=PING_TYPE,
            version=1,
            description="A test message, sent only when asked (POST "
            "/v1/subscriptions/{id}/test), signed like a delivery; never filtered.",
            schema_=_schema(PingData),
        ),
    )
