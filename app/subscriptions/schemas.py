"""Documents of `/v1/subscriptions` and `/v1/deliveries` (docs/api.md, Subscriptions)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

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
