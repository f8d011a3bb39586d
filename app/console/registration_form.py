"""The registration form of the console, generated from a policy (pure: no I/O).

A policy's templates (app/catalog/schema.py `templates`) give the fields: one section per
request member the policy has a template for (`companyDetails`, `contactPerson`, `senderIds`),
one input per field rule, named by the field's JSON path in the request
(`$.companyDetails.companyName`, `$.senderIds[0].senderId`): the very path the policy check
(app/catalog/check.py) answers an error at, so each error is shown beside its input. An enum is
a choice, a boolean a yes/no choice; the rest is text, with the rules (required, pattern,
lengths) written beside it. The browser checks nothing (no `required` or `pattern` attribute):
the server's check, the same as `?validateOnly=true`, is the one that answers.

What a form posts becomes the request the check takes (`request_of`): blank inputs are left out,
numbers and booleans read as such (an unreadable one is kept as text, for the check to refuse).
`app.catalog.layout.to_sinch` turns that request into the body Sinch's create and update take;
`values_of` reads a registration's document back into the inputs (the update form, prefilled).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from app.catalog.check import FieldError, json_path
from app.catalog.schema import MAX_SENDER_IDS, MEMBERS, templates

SENDER_MEMBER: Final = "senderIds"
TAGS: Final = "tags"
MULTI_SENDER_ROWS: Final = 3
"""Sender ID rows a MULTI_SENDER form offers beyond those filled (blank rows are left out)."""
TITLES: Final = {
    "companyDetails": "Company details",
    "contactPerson": "Contact person",
    SENDER_MEMBER: "Sender IDs",
}


@dataclass(frozen=True, slots=True)
class FormField:
    """One input: the field's rule from the policy, its value and its error."""

    path: str
    """The field's JSON path in the request, and the input's name."""
    name: str
    title: str
    kind: str
    required: bool
    description: str | None = None
    choices: list[str] | None = None
    rules: list[str] = field(default_factory=list)
    """The rules written beside the input (lengths, pattern, example)."""
    value: str = ""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Section:
    member: str
    title: str
    rows: list[list[FormField]]
    """One row of fields per object: one, or one per sender ID."""


def _rules(item: Mapping[str, Any]) -> list[str]:
    found = []
    if isinstance(item.get("minLength"), int):
        found.append(f"at least {item['minLength']} characters")
    if isinstance(item.get("maxLength"), int):
        found.append(f"at most {item['maxLength']} characters")
    if isinstance(item.get("pattern"), str):
        found.append(f"pattern {item['pattern']}")
    examples = item.get("examples")
    if isinstance(examples, list) and examples:
        found.append(f"e.g. {examples[0]}")
    return found


def _field(
    item: Mapping[str, Any],
    parts: list[str | int],
    values: Mapping[str, str],
    errors: Mapping[str, str],
) -> FormField:
    path = json_path(parts)
    kind = str(item.get("type") or "string")
    enum = item.get("enum")
    choices = [str(v) for v in enum] if isinstance(enum, list) else None
    if kind == "boolean" and choices is None:
        choices = ["true", "false"]
    title = item.get("title")
    description = item.get("description")
    return FormField(
        path=path,
        name=item["name"],
        title=title if isinstance(title, str) and title else item["name"],
        kind=kind,
        required=item.get("required") is True,
        description=description if isinstance(description, str) and description != title else None,
        choices=choices,
        rules=_rules(item),
        value=values.get(path, ""),
        error=errors.get(path),
    )


def sender_rows(policy: Mapping[str, Any], values: Mapping[str, str]) -> int:
    """How many sender ID rows the form shows: one for `SINGLE`; for `MULTI_SENDER` those
    filled and `MULTI_SENDER_ROWS` blank ones more, within Sinch's bound."""
    if policy.get("policyMultiType") != "MULTI_SENDER":
        return 1
    prefix = f"$.{SENDER_MEMBER}["
    filled = {
        int(path[len(prefix) :].split("]", 1)[0])
        for path, value in values.items()
        if path.startswith(prefix) and value and path[len(prefix) :].split("]", 1)[0].isdigit()
    }
    return min(MAX_SENDER_IDS, (max(filled) + 1 if filled else 0) + MULTI_SENDER_ROWS)


def sections(
    policy: Mapping[str, Any], values: Mapping[str, str], errors: Mapping[str, str]
) -> list[Section]:
    """The form's sections for `policy`, with `values` and `errors` by path."""
    found = templates(policy)
    result = []
    for member, template_name in MEMBERS:
        items = found.get(template_name)
        if not items:
            continue
        if member == SENDER_MEMBER:
            rows = [
                [_field(item, [member, index, item["name"]], values, errors) for item in items]
                for index in range(sender_rows(policy, values))
            ]
        else:
            rows = [[_field(item, [member, item["name"]], values, errors) for item in items]]
        result.append(Section(member, TITLES.get(member, member), rows))
    return result


def _typed(value: str, kind: str) -> Any:
    """A posted text as the field's type; text it cannot be read as stays text."""
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


def request_of(
    policy: Mapping[str, Any],
    posted: Mapping[str, str],
    *,
    policy_id: str,
    registration_type: str | None,
) -> dict[str, Any]:
    """The request (as the policy check takes it) a form posted: each section's filled fields;
    a member whose template exists is always there (empty when nothing was filled), so that a
    required field is reported at its own input; sender ID rows left blank are left out (one is
    kept, empty, when all are)."""
    request: dict[str, Any] = {"policyId": policy_id}
    if registration_type is not None:
        request["registrationType"] = registration_type
    for section in sections(policy, posted, {}):
        objects = []
        for row in section.rows:
            filled = {f.name: _typed(f.value.strip(), f.kind) for f in row if f.value.strip() != ""}
            objects.append(filled)
        if section.member == SENDER_MEMBER:
            request[SENDER_MEMBER] = [o for o in objects if o] or [{}]
        else:
            request[section.member] = objects[0]
    tags = [t.strip() for t in posted.get(TAGS, "").split(",") if t.strip()]
    if tags:
        request[TAGS] = tags
    return request


def errors_by_path(
    errors: Iterable[FieldError], form: list[Section]
) -> tuple[dict[str, str], list[FieldError]]:
    """The check's errors as (message by input path, the errors no input shows: the policy
    disabled, a whole member, attachments), so that every error is shown once."""
    inputs = {f.path for section in form for row in section.rows for f in row}
    beside: dict[str, str] = {}
    above: list[FieldError] = []
    for error in errors:
        if error.path in inputs:
            beside[error.path] = error.message
        else:
            above.append(error)
    return beside, above


def values_of(document: Mapping[str, Any] | None) -> dict[str, str]:
    """The inputs' values a registration's document gives (by path): its sender IDs'
    details (every `requestDetails[].senderIdDetails[]`, in order), the company and contact
    details where the document holds them (`requestDetails[].additionalDetails[]`, as
    `app.catalog.layout.to_sinch` lays them out, else top-level), and its tags."""
    values: dict[str, str] = {}
    if not document:
        return values

    def keep(parts: list[str | int], value: Any) -> None:
        if isinstance(value, bool):
            values[json_path(parts)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            values[json_path(parts)] = str(value)

    details = [e for e in document.get("requestDetails") or [] if isinstance(e, dict)]

    def items(key: str) -> list[dict[str, Any]]:
        return [i for e in details for i in e.get(key) or [] if isinstance(i, dict)]

    for index, item in enumerate(items("senderIdDetails")):
        for name, value in item.items():
            keep([SENDER_MEMBER, index, name], value)
    # Where `layout.to_sinch` puts them, else where a document may name them itself.
    holders = [*items("additionalDetails"), document]
    for member, _ in MEMBERS:
        held = next((h[member] for h in holders if isinstance(h.get(member), dict)), None)
        if member != SENDER_MEMBER and held is not None:
            for name, value in held.items():
                keep([member, name], value)
    tags = document.get(TAGS)
    if isinstance(tags, list):
        values[TAGS] = ", ".join(str(t) for t in tags)
    return values
