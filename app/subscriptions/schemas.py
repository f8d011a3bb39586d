"""Documents of `/v1/subscriptions` and `/v1/deliveries` (docs/api.md, Subscriptions)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, StringConstraints

from app.core.models import DeliveryState
from app.core.schemas import ApiModel, ApiTime
from app.subscriptions.rules import MAX_URL_LENGTH

FilterValue = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^,\x00-\x1f\x7f]+$")
]
FilterList = Annotated[list[FilterValue], Field(min_length=1, max_length=50)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH)]
Description = Annotated[str, StringConstraints(max_length=1000)]


class SubscriptionIn(ApiModel):
    url: Url = Field(
        description="Where to POST: http or https, no credentials, a host that "
        "SUBSCRIPTION_ALLOWED_HOSTS allows. Redirects are not followed."
    )
    statuses: FilterList | None = Field(
        default=None, description="Only changes into these statuses; omitted: every status."
    )
    registration_types: FilterList | None = Field(
        default=None, description="Only registrations of these types; omitted: every type."
    )
    kinds: FilterList | None = Field(
        default=None,
        description="Only changes of these kinds (`status`: the status moved; `details`: only "
        "facts changed; `overdue`: it became overdue); omitted: every kind."
        " The catalog: GET /v1/event-types.",
    )
    project_ids: FilterList | None = Field(
        default=None,
        description="Only these Sinch projects' changes; omitted: every project (with a token "
        "limited to projects: the token's projects).",
    )
    description: Description | None = None


class SubscriptionPatch(ApiModel):
    """Only the fields given change; `null` for a filter means every value."""

    url: Url | None = None
    statuses: FilterList | None = None
    registration_types: FilterList | None = None
    kinds: FilterList | None = None
    project_ids: FilterList | None = None
    description: Description | None = None
    enabled: bool | None = Field(
        default=None, description="`true` enables again a subscription that was disabled."
    )


class SubscriptionOut(ApiModel):
    id: str
    url: str
    statuses: list[str] | None
    registration_types: list[str] | None
    kinds: list[str] | None
    project_ids: list[str] | None = Field(
        description="The Sinch projects whose changes it receives; null: every project."
    )
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled; null when enabled.")
    previous_secret_until: ApiTime | None = Field(
        description="After a rotation: deliveries are signed with the previous secret too until "
        "then."
    )
    created_at: ApiTime
    updated_at: ApiTime


class SubscriptionWithSecret(SubscriptionOut):
    secret: str = Field(
        description="`whsec_` + base64: the key to verify deliveries with (Standard Webhooks). "
        "Shown only when created and when rotated."
    )


class SubscriptionList(ApiModel):
    items: list[SubscriptionOut]


class DeliveryOut(ApiModel):
    id: int
    seq: int | None = Field(description="The change's place in the feed (/v1/changes).")
    project_id: str = Field(description="The Sinch project it belongs to.")
    registration_id: str
    state: DeliveryState
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: ApiTime | None = Field(description="When it is tried again; null when done.")
    created_at: ApiTime
    updated_at: ApiTime


class DeliveryPage(ApiModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class AttemptOutcome(StrEnum):
    """The attempts log's `outcome` filter: a 2xx answer, or anything else."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AttemptOut(ApiModel):
    id: int
    delivery_id: int
    seq: int | None = Field(description="The change's place in the feed (/v1/changes).")
    attempted_at: ApiTime = Field(description="When the POST began.")
    request_headers: dict[str, str] | None = Field(
        description="The headers sent, `webhook-signature` included (a signature, never a "
        "secret); null when nothing was sent (the URL or its address was refused)."
    )
    payload: dict[str, Any] = Field(description="The body sent: `{type, timestamp, data}`.")
    response_status: int | None = Field(description="The receiver's status; null: no answer.")
    response_body: str | None = Field(
        description="The first 4 KiB of the receiver's answer, as text; null: no answer."
    )
    latency_ms: float | None = Field(
        description="From the POST's start to the answer's head (or the failure)."
    )
    error: str | None = Field(description="Why the attempt failed; null when it succeeded.")


class AttemptPage(ApiModel):
    items: list[AttemptOut]
    next_cursor: str | None


class PingData(ApiModel):
    """The `data` of a test message (`ping`): which subscription it tests, and when it was sent."""

    subscription_id: str = Field(description="The subscription tested.")
    sent_at: ApiTime = Field(description="When the test was sent (this service's clock).")


class PingOutcome(ApiModel):
    """What came of a test message."""

    delivered: bool = Field(description="The receiver answered 2xx.")
    response_status: int | None = Field(description="The receiver's status; null: no answer.")
    response_body: str | None = Field(
        description="The first 4 KiB of the receiver's answer, as text; null: no answer."
    )
    latency_ms: float | None = Field(
        description="From the POST's start to the answer's head (or the failure); null when "
        "nothing was sent."
    )
    error: str | None = Field(description="Why it was not delivered; null when it was.")


class RetryFailedIn(ApiModel):
    since: AwareDatetime = Field(
        description="Retry the failed deliveries written at or after this time."
    )
    dry_run: bool = Field(
        default=False, description="`true`: only count them; nothing changes, nothing is sent."
    )


class RetryFailedOut(ApiModel):
    count: int = Field(description="How many failed deliveries are (or, dry, would be) retried.")
    dry_run: bool


class EnableIn(ApiModel):
    backlog: bool = Field(
        description="`true`: also deliver what failed since it began failing or was disabled "
        "(in change order); `false`: skip that, and what is still pending, and deliver only "
        "new changes."
    )


class EnableOut(ApiModel):
    subscription: SubscriptionOut
    retried: int = Field(description="Failed deliveries of the backlog made pending again.")
    skipped: int = Field(description="Pending deliveries ended `failed` (without the backlog).")


class LatencyOut(ApiModel):
    p50: float | None = Field(description="Milliseconds; null without an answered attempt.")
    p95: float | None


class HourOut(ApiModel):
    hour: ApiTime = Field(description="The hour's start (UTC).")
    succeeded: int
    failed: int


class HealthOut(ApiModel):
    """A subscription's deliveries over the last 24 hours, from the attempts log."""

    since: ApiTime = Field(description="The window's start: 24 hours before the answer.")
    attempts: int
    succeeded: int
    success_rate: float | None = Field(description="succeeded / attempts; null without any.")
    latency_ms: LatencyOut = Field(description="Of the attempts that got an answer.")
    failures_by_cause: dict[str, int] = Field(
        description="`http_4xx`, `http_5xx`, `http_other`, `timeout`, `connection`, "
        "`not_sent` (refused by the destination checks), `other`: only those that occurred."
    )
    failing_since: ApiTime | None = Field(
        description="The first failed attempt since the last success; null while it succeeds."
    )
    failing: bool = Field(
        description="Enabled, and every attempt has failed for at least "
        "SUBSCRIPTION_FAILING_ALERT_MINUTES."
    )
    hourly: list[HourOut] = Field(description="Each hour of the window that had attempts.")


class EventTypeOut(ApiModel):
    type: str = Field(description="The message's `type`.")
    version: int = Field(description="Raised when `data` changes in a way receivers could notice.")
    description: str
    schema_: dict[str, Any] = Field(
        alias="schema", description="The JSON Schema (2020-12) of the message's `data`."
    )


class EventTypeList(ApiModel):
    items: list[EventTypeOut]
