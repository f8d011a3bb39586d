"""Documents of the catalog's routes (docs/api.md, Markets and policies) and of the check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field
from sqlalchemy import Row

from app.catalog.check import CheckResult, FieldError
from app.catalog.schema import Converted
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

    @classmethod
    def of(cls, row: Row[Any]) -> PolicyChangeOut:
        """The document of a `policy_changes` row: its columns, and its diff's three lists."""
        parts = {part: row.diff.get(part, []) for part in ("added", "changed", "removed")}
        return cls.model_validate({**row._mapping, **parts})


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

    @classmethod
    def of(cls, row: Row[Any], converted: Converted, changes: Sequence[Row[Any]]) -> PolicyOut:
        """The document of a `catalog_policies` row: its columns, what its document says of its
        status and price (when of the right type), its request schema `converted` from that
        document, and its `changes` rows."""
        document: dict[str, Any] = row.document
        disclaimer = document.get("statusDisclaimer")
        price = document.get("price")
        return cls.model_validate(
            {
                **row._mapping,
                "status_disclaimer": disclaimer if isinstance(disclaimer, str) else None,
                "price": price if isinstance(price, dict) else None,
                "json_schema": converted.schema,
                "unchecked": converted.unchecked,
                "changes": [PolicyChangeOut.of(change) for change in changes],
            }
        )


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
        """The answer of `result`: its fields by their names (`valid` is its property)."""
        return cls(
            **same_named(cls, result, but={"attachments", "errors"}),
            attachments=[AttachmentNeedOut.model_validate(a) for a in result.attachments],
            errors=[FieldErrorOut.of(e) for e in result.errors],
        )
