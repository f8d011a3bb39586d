"""The check of a registration request against its policy, before anything is sent to Sinch.
Pure: no I/O (app/catalog/service.py reads the policy and calls `check`).

The request's fields are validated with `jsonschema` against the policy converted to JSON Schema
(app/catalog/schema.py says how). The answer has one entry per field in error (`FieldError`): its
JSON path (`$.senderIds[0].senderId`), the rule it breaks, and a message: Sinch's own text for
that rule when the policy has one (`message{pattern, minLength, maxLength}`), else ours. No
message quotes the value sent (an answer never echoes input). When a field breaks several rules,
the first of `RULE_ORDER` is answered.

Beyond the fields:
- a `DISABLED` policy is an error at `$.policyId` whose message is Sinch's `statusDisclaimer`
  (answered first, before the fields, which are still checked);
- a `registrationType` that is not the policy's is an error at `$.registrationType`;
- attachments: a request may list the ones it will upload (`attachments: [{attachmentId,
  mimeType}]`); each must be one of the policy's, of an allowed MIME type, and every mandatory
  one must be listed. A request that lists none is not refused for it: Sinch accepts the
  registration and holds it `PENDING_ATTACHMENTS` until they are uploaded; the answer names them.
The price is the policy's `price`, as Sinch sent it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from app.catalog.schema import MESSAGES, request_schema

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

RULE_ORDER: Final = (
    "required",
    "additionalProperties",
    "type",
    "enum",
    "format",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
)
"""Which broken rule a field's entry names when it breaks several."""
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field in error: where, which rule, and what to do (Sinch's words when it has some)."""

    path: str
    rule: str
    message: str
    from_sinch: bool = False
    """True when `message` is the policy's own text for this rule."""


@dataclass(frozen=True, slots=True)
class AttachmentNeed:
    """An attachment the policy defines, and whether this request covers it."""

    attachment_id: str
    title: str | None
    mandatory: bool
    allowed_mime_types: list[str]
    listed: bool
    """Whether the request lists it among those it will upload."""


@dataclass(slots=True)
class CheckResult:
    """The check's answer: valid when `errors` is empty."""

    policy_id: str | None
    project_id: str | None = None
    market_code: str | None = None
    registration_type: str | None = None
    policy_status: str | None = None
    price: dict[str, Any] | None = None
    errors: list[FieldError] = field(default_factory=list)
    attachments: list[AttachmentNeed] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    """Rules of the policy this service could not check (schema.Converted.unchecked)."""

    @property
    def valid(self) -> bool:
        return not self.errors


def json_path(parts: Sequence[str | int]) -> str:
    """`$.a.b[0].c`; a key that is not an identifier as `['key']`."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.match(part):
            path += f".{part}"
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            path += f"['{escaped}']"
    return path


def _names(values: object) -> str:
    if isinstance(values, list):
        return ", ".join(str(v) for v in values)
    return str(values)


def _our_message(rule: str, value: object) -> str:
    """Our message for a broken rule; `value` is the rule's own value, never the input."""
    messages = {
        "required": "This field is required.",
        "additionalProperties": "This field is not one of the policy's.",
        "type": f"Must be of type {_names(value)}.",
        "enum": f"Must be one of: {_names(value)}.",
        "format": f"Must be a {value} (e.g. 2026-01-31).",
        "minItems": f"At least {value} needed.",
        "maxItems": f"At most {value} allowed.",
        "minLength": f"Must have at least {value} characters.",
        "maxLength": f"Must have at most {value} characters.",
        "pattern": f"Must match the pattern {value}.",
        "minimum": f"Must be at least {value}.",
        "maximum": f"Must be at most {value}.",
    }
    return messages.get(rule, f"Breaks the policy's rule `{rule}`.")


def _entries(error: ValidationError) -> list[tuple[list[str | int], str, str, bool]]:
    """(path, rule, message, from Sinch) for one jsonschema error; a `required` or
    `additionalProperties` error names each field it concerns."""
    where: list[str | int] = list(error.absolute_path)
    rule = str(error.validator)
    instance = error.instance
    if rule == "required" and isinstance(instance, dict):
        names = error.validator_value if isinstance(error.validator_value, list) else []
        missing = [n for n in names if n not in instance]
        return [([*where, name], rule, _our_message(rule, None), False) for name in missing]
    if rule == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = sorted(name for name in instance if name not in known)
        return [([*where, name], rule, _our_message(rule, None), False) for name in extra]
    schema = error.schema if isinstance(error.schema, dict) else {}
    sinch_text = (schema.get(MESSAGES) or {}).get(rule)
    if isinstance(sinch_text, str) and sinch_text:
        return [(where, rule, sinch_text, True)]
    return [(where, rule, _our_message(rule, error.validator_value), False)]


def _rank(rule: str) -> int:
    return RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER)


def field_errors(schema: Mapping[str, Any], body: object) -> list[FieldError]:
    """One entry per field in error, by path (module docstring)."""
    # Imported here, by the few requests that check a body: jsonschema (with attrs, referencing
    # and rpds) is about 5% of importing the app, which every process would pay at its start.
    from jsonschema import Draft202012Validator, FormatChecker

    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    best: dict[str, tuple[int, FieldError]] = {}
    for error in validator.iter_errors(body):
        for parts, rule, message, from_sinch in _entries(error):
            path = json_path(parts)
            rank = _rank(rule)
            if path not in best or rank < best[path][0]:
                best[path] = (rank, FieldError(path, rule, message, from_sinch))
    return [entry for _, (_, entry) in sorted(best.items())]


def _attachments(
    policy: Mapping[str, Any], body: Mapping[str, Any]
) -> tuple[list[AttachmentNeed], list[FieldError]]:
    defined = [
        a
        for a in policy.get("attachments") or []
        if isinstance(a, dict) and isinstance(a.get("id"), str)
    ]
    by_id = {a["id"]: a for a in defined}
    listed = body.get("attachments")
    errors: list[FieldError] = []
    named: set[str] = set()
    if listed is not None and not isinstance(listed, list):
        errors.append(FieldError("$.attachments", "type", _our_message("type", "array")))
        listed = None
    for index, entry in enumerate(listed or []):
        where = f"$.attachments[{index}]"
        attachment_id = entry.get("attachmentId") if isinstance(entry, dict) else None
        if not isinstance(attachment_id, str) or attachment_id not in by_id:
            errors.append(
                FieldError(
                    f"{where}.attachmentId",
                    "enum",
                    _our_message("enum", sorted(by_id) or ["(this policy takes none)"]),
                )
            )
            continue
        named.add(attachment_id)
        allowed = by_id[attachment_id].get("allowedMimeTypes") or []
        mime = entry.get("mimeType") if isinstance(entry, dict) else None
        if allowed and mime is not None and mime not in allowed:
            errors.append(FieldError(f"{where}.mimeType", "enum", _our_message("enum", allowed)))
    needs = [
        AttachmentNeed(
            attachment_id=a["id"],
            title=a.get("title") if isinstance(a.get("title"), str) else None,
            mandatory=a.get("mandatory") is True,
            allowed_mime_types=[t for t in a.get("allowedMimeTypes") or [] if isinstance(t, str)],
            listed=a["id"] in named,
        )
        for a in defined
    ]
    if listed is not None:
        missing = [n.attachment_id for n in needs if n.mandatory and not n.listed]
        if missing:
            errors.append(
                FieldError(
                    "$.attachments",
                    "required",
                    f"The policy requires these attachments: {', '.join(missing)}.",
                )
            )
    return needs, errors


def check(
    policy: Mapping[str, Any],
    body: Mapping[str, Any],
    *,
    policy_id: str | None = None,
    project_id: str | None = None,
    market_code: str | None = None,
    registration_type: str | None = None,
) -> CheckResult:
    """Check `body` (a registration request) against `policy` (Sinch's document); see the module
    docstring. `registration_type` is the type the policy serves (from the market details)."""
    converted = request_schema(policy)
    status = policy.get("policyStatus")
    price = policy.get("price")
    result = CheckResult(
        policy_id=policy_id or (policy.get("id") if isinstance(policy.get("id"), str) else None),
        project_id=project_id,
        market_code=market_code,
        registration_type=registration_type,
        policy_status=status if isinstance(status, str) else None,
        price=price if isinstance(price, dict) else None,
        unchecked=converted.unchecked,
    )
    errors: list[FieldError] = []
    if status == "DISABLED":
        disclaimer = policy.get("statusDisclaimer")
        errors.append(
            FieldError(
                "$.policyId",
                "policyStatus",
                disclaimer
                if isinstance(disclaimer, str) and disclaimer
                else "Sinch has disabled this policy: registrations under it are not accepted.",
                from_sinch=isinstance(disclaimer, str) and bool(disclaimer),
            )
        )
    asked_type = body.get("registrationType")
    if asked_type is not None and registration_type is not None and asked_type != registration_type:
        errors.append(
            FieldError(
                "$.registrationType",
                "const",
                f"This policy is for {registration_type} registrations.",
            )
        )
    result.attachments, attachment_errors = _attachments(policy, body)
    fields = field_errors(converted.schema, dict(body)) + attachment_errors
    # The policy's own refusals first, then the fields by path.
    result.errors = errors + sorted(fields, key=lambda e: e.path)
    return result
