"""Sinch's documents, parsed leniently.

Sinch adds fields and states without notice (docs/sinch.md), so every model keeps unknown fields, a
status is any string, and a time that cannot be read becomes None instead of an error. A
registration also keeps the exact document Sinch sent, for storage.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)


def parse_sinch_time(value: object) -> datetime | None:
    """Read a Sinch time as an aware UTC datetime; None when missing, unreadable or out of range.

    Sinch writes `2021-11-03T14:30:03` (UTC, no offset); an offset, a `Z` or a bare date is
    accepted too. A naive value is taken as UTC. Never raises on anything a JSON document holds,
    nor on a datetime with a fixed offset: a time that exists only with its offset
    (`9999-12-31T23:59:59-14:00` is past the largest datetime once in UTC,
    `0001-01-01T00:00:00+14:00` before the smallest) is None like any other unreadable time.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except (ValueError, OverflowError):
            return None
    else:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        # OverflowError past either end of datetime's range. ValueError from a datetime handed in
        # with a tzinfo whose offset is unusable (e.g. 24 h or more).
        return None


LenientTime = Annotated[datetime | None, BeforeValidator(parse_sinch_time)]


def _as_text(value: object) -> object:
    # A number or a boolean where a string is expected is kept as its text rather than refused.
    if isinstance(value, int | float | bool):
        return str(value)
    return value


LenientStr = Annotated[str, BeforeValidator(_as_text)]


class SinchRegistration(BaseModel):
    """One registration as Sinch describes it.

    Only `id` and `status` are required. `status` is kept as sent, including states this service
    does not know. `raw` holds the document exactly as received, however the model was validated.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    id: LenientStr
    status: LenientStr
    registration_type: str | None = Field(default=None, alias="registrationType")
    callback_url: str | None = Field(default=None, alias="callbackUrl")
    create_time: LenientTime = Field(default=None, alias="createTime")
    update_time: LenientTime = Field(default=None, alias="updateTime")

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        registration = handler(data)
        if isinstance(data, dict):
            registration._raw = copy.deepcopy(data)
        return registration

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Self:
        """Parse `doc`; raises pydantic's ValidationError when `id` or `status` is missing."""
        return cls.model_validate(doc)

    @property
    def raw(self) -> dict[str, Any]:
        """A copy of the document exactly as Sinch sent it (unknown fields included)."""
        return copy.deepcopy(self._raw)


def _str_or_none(value: object) -> str | None:
    # A field of the wrong type is absent, never an error.
    return value if isinstance(value, str) else None


LenientOptionalStr = Annotated[str | None, BeforeValidator(_str_or_none)]

MAX_CONDITION_NODES = 10_000
"""Special-condition entries read from one market version at most (a bound on a hostile answer)."""


def chained_policy_ids(special_conditions: object) -> tuple[str, ...]:
    """Every non-empty string `policyId` in `chainedSpecialConditions`, each once, depth first in
    Sinch's order; chains may nest (an entry has its own `chainedSpecialConditions`). Anything of
    the wrong shape (not an object, not a list, an entry that is not an object) is skipped."""
    found: dict[str, None] = {}
    if not isinstance(special_conditions, dict):
        return ()
    stack: list[object] = [special_conditions]
    visited = 0
    while stack and visited < MAX_CONDITION_NODES:
        node = stack.pop()
        visited += 1
        if not isinstance(node, dict):
            continue
        if node is not special_conditions:
            policy_id = node.get("policyId")
            if isinstance(policy_id, str) and policy_id:
                found.setdefault(policy_id)
        chain = node.get("chainedSpecialConditions")
        if isinstance(chain, list):
            stack.extend(reversed(chain))
    return tuple(found)


class MarketVersion(BaseModel):
    """One of Sinch's market versions (GET /markets/details): the market and registration type
    its policies belong to.

    `policy_ids` are the policies its special conditions name (`chained_policy_ids`). Lenient like
    the registration: unknown fields are kept, and a field of the wrong shape is absent.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    market_code: LenientOptionalStr = Field(default=None, alias="marketCode")
    registration_type: LenientOptionalStr = Field(default=None, alias="registrationType")
    policy_ids: tuple[str, ...] = ()

    @classmethod
    def from_document(cls, doc: object) -> MarketVersion | None:
        """Parse a market version; None when `doc` is not an object. Never raises."""
        if not isinstance(doc, dict):
            return None
        policy_ids = chained_policy_ids(doc.get("specialConditions"))
        # The fields' own names are not Sinch's: a document using them is not obeyed.
        kept = {k: v for k, v in doc.items() if k not in _MARKET_VERSION_FIELD_NAMES}
        try:
            return cls.model_validate({**kept, "policy_ids": policy_ids})
        except ValidationError:  # an odd key; the fields alone then
            return cls.model_construct(
                market_code=_str_or_none(doc.get("marketCode")),
                registration_type=_str_or_none(doc.get("registrationType")),
                policy_ids=policy_ids,
            )


_MARKET_VERSION_FIELD_NAMES = frozenset(MarketVersion.model_fields)


class AvailableMarket(BaseModel):
    """A market open to registrations of one type (GET /markets/availability's `markets[]`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    market_code: str = Field(alias="marketCode", min_length=1)
    market_name: LenientOptionalStr = Field(default=None, alias="marketName")

    @classmethod
    def from_document(cls, doc: object) -> AvailableMarket | None:
        """Parse one entry; None when it is not an object with a string `marketCode`."""
        if not isinstance(doc, dict) or not isinstance(doc.get("marketCode"), str):
            return None
        try:
            return cls.model_validate(doc)
        except ValidationError:
            return None


class CallbackConfiguration(BaseModel):
    """The project's callback configuration: the secret Sinch signs callbacks with."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    hmac_secret: SecretStr = Field(alias="hmacSecret")
    project_id: str | None = Field(default=None, alias="projectId")
