"""Documents of the catalog's routes (docs/api.md, Markets and policies) and of the check."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.catalog.check import CheckResult, FieldError
from app.core.schemas import ApiModel, ApiTime, same_named


class MarketOut(ApiModel):
    """A market open to one registration type, in one project, as Sinch serves it."""

    project_id: str = Field(description="The Sinch project it was read from.")
    market_code: str = Field(description="ISO 3166 alpha-2, as Sinch writes it.")
    market_name: str | None = Field(description="Sinch's name of the market; null if unnamed.")
    registration_type: str
    available: bool = Field(
        description="Whether Sinch lists it in GET /markets/availability for this type (a "
        "market version alone does not make it available)."
    )
    policy_ids: list[str] = Field(
        description="The policies its market versions' special conditions name, in Sinch's order."
    )
    versions: list[Any] = Field(description="Sinch's market versions, as sent.")
    refreshed_at: ApiTime = Field(description="When it was last read from Sinch.")
    updated_at: ApiTime = Field(description="When a refresh last found it different.")


class MarketPage(ApiModel):
    items: list[MarketOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


class MarketDetailOut(ApiModel):
    """One market: each registration type (and project) it is served for."""

    market_code: str
    market_name: str | None
    items: list[MarketOut]


class PolicyChangeOut(ApiModel):
    """What a refresh found changed in the policy."""

    id: int
    changed_at: ApiTime
    added: list[dict[str, Any]] = Field(description="`{field, after}` of each field added.")
    changed: list[dict[str, Any]] = Field(description="`{field, before, after}` of each change.")
    removed: list[dict[str, Any]] = Field(description="`{field, before}` of each field removed.")
    registrations: int = Field(
        description="How many of the project's registrations under the policy got a "
        "`policy_changed` change on the feed."
    )


class PolicyOut(ApiModel):
    """A policy as one project's Sinch serves it, with its request schema."""

    policy_id: str
    project_id: str
    market_code: str | None
    registration_type: str | None
    status: str | None = Field(description="Sinch's `policyStatus`: `ENABLED` or `DISABLED`.")
    status_disclaimer: str | None = Field(description="Sinch's reason for a disabled policy.")
    price: dict[str, Any] | None = Field(description="Sinch's `price`, as sent.")
    document: dict[str, Any] = Field(description="The policy as Sinch sent it.")
    json_schema: dict[str, Any] = Field(
        description="The JSON Schema (2020-12) a registration request must meet under this "
        "policy: Sinch's field lists converted (docs/api.md says how)."
    )
    unchecked: list[str] = Field(description="Rules of the policy the check cannot apply.")
    refreshed_at: ApiTime
    changed_at: ApiTime = Field(description="When this version of the document was first read.")
    changes: list[PolicyChangeOut] = Field(description="Its recorded changes, newest first.")


class FieldErrorOut(ApiModel):
    """One field in error, as every policy refusal answers it (`errors[]` of the 422 problem and
    of the check's answer): built here only, from the check's `FieldError` (`of`)."""

    field: str = Field(
        description="The field's JSON path in the body as sent, e.g. "
        "`$.requestDetails[0].senderIdDetails[0].senderId` (the contract's name; the same as "
        "`path`)."
    )
    path: str = Field(description="The same JSON path as `field`.")
    rule: str = Field(description="The rule broken: `required`, `pattern`, `maxLength`, ...")
    message: str = Field(description="Sinch's own text for the rule when the policy has one.")
    from_sinch: bool = Field(description="Whether `message` is Sinch's.")

    @classmethod
    def of(cls, error: FieldError) -> FieldErrorOut:
        return cls(field=error.path, **same_named(cls, error, but={"field"}))


class AttachmentNeedOut(ApiModel):
    attachment_id: str
    title: str | None
    mandatory: bool
    allowed_mime_types: list[str]
    listed: bool = Field(description="Whether the request lists it among those it will upload.")


class CheckOut(ApiModel):
    """A request that meets its policy: what it will cost, and the attachments to upload."""

    valid: bool
    policy_id: str | None
    project_id: str | None
    market_code: str | None
    registration_type: str | None
    price: dict[str, Any] | None = Field(description="The policy's `price`, as Sinch sent it.")
    attachments: list[AttachmentNeedOut] = Field(
        description="The policy's attachments; mandatory ones not yet uploaded leave the "
        "registration PENDING_ATTACHMENTS at Sinch."
    )
    unchecked: list[str]
    errors: list[FieldErrorOut]

    @classmethod
    def of(cls, result: CheckResult) -> CheckOut:
        return cls(
            valid=result.valid,
            policy_id=result.policy_id,
            project_id=result.project_id,
            market_code=result.market_code,
            registration_type=result.registration_type,
            price=result.price,
            attachments=[AttachmentNeedOut.model_validate(a) for a in result.attachments],
            unchecked=result.unchecked,
            errors=[FieldErrorOut.of(e) for e in result.errors],
        )
