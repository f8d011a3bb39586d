"""Sinch's policy field lists converted to JSON Schema (draft 2020-12). Pure: no I/O.

A policy's `jsonPolicy` holds three templates; each template's `properties` is an ARRAY of field
rules, not JSON Schema (docs/sinch.md). A registration request of this service names them:

| request member   | policy template                      | JSON Schema                      |
|------------------|--------------------------------------|----------------------------------|
| `companyDetails` | `jsonPolicy.companyDetailsTemplate`  | an object                        |
| `contactPerson`  | `jsonPolicy.contactPersonTemplate`   | an object                        |
| `senderIds`      | `jsonPolicy.senderIdTemplate`        | an array of such objects: 1 for  |
|                  |                                      | `SINGLE`, 1 to 50 `MULTI_SENDER` |

A member is required when its template has at least one field. Each field rule becomes:

| Sinch's item                   | JSON Schema                                                    |
|--------------------------------|----------------------------------------------------------------|
| `name`                         | the key in `properties`                                        |
| `required: true`               | the name in the object's `required`                            |
| `x-requiredIf: {name, enum}`   | `allOf: [{if: {properties: {name: {enum}}, required: [name]},` |
|                                | `then: {required: [field]}}]` (our reading of a conditional    |
|                                | field: Sinch does not document one, docs/sinch.md)             |
| `type` string, integer, number,| the same `type`; `date` is a string of `format: date`; another |
| boolean, array, object         | type is not checked                                            |
| `minLength`, `maxLength`,      | the same keywords                                              |
| `pattern`, `enum`, `minimum`,  |                                                                |
| `maximum`                      |                                                                |
| `title`, `description`,        | kept as annotations                                            |
| `examples`                     |                                                                |
| `message{rule: text}`          | `x-messages`: Sinch's text per rule, which the check answers   |
|                                | instead of ours (app/catalog/check.py)                         |

A field the template does not name is refused (`additionalProperties: false`): a misspelt name
would otherwise pass here and be refused by Sinch. A `pattern` Python's `re` cannot compile is
left out and reported in `unchecked` (Sinch's patterns are written for another engine).
Attachments are not fields: the check reads them from the policy itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
MAX_SENDER_IDS: Final = 50
"""Sender IDs one MULTI_SENDER registration may carry (Sinch's documented bound)."""
MEMBERS: Final = (
    ("companyDetails", "companyDetailsTemplate"),
    ("contactPerson", "contactPersonTemplate"),
    ("senderIds", "senderIdTemplate"),
)
"""(request member, the policy template it follows)."""
REQUIRED_IF: Final = "x-requiredIf"
MESSAGES: Final = "x-messages"

_JSON_TYPES: Final = ("string", "integer", "number", "boolean", "array", "object")
_TYPES: Final = {
    **{name: {"type": name} for name in _JSON_TYPES},
    "date": {"type": "string", "format": "date"},
}
"""The JSON Schema of each field type a policy names: JSON's own types as they are, a `date` a
string of format date; a field of any other type gets no `type` keyword."""
_COPIED: Final = ("minLength", "maxLength", "enum", "minimum", "maximum")
_ANNOTATIONS: Final = ("title", "description", "examples")


@dataclass(slots=True)
class Converted:
    """A policy's request schema, and what of the policy it could not express."""

    schema: dict[str, Any]
    unchecked: list[str] = field(default_factory=list)
    """`<template>.<field>.<rule>` of each rule left out (a pattern `re` cannot compile)."""


def templates(policy: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each template's field items by template name (`senderIdTemplate`, ...); an item that is
    not an object with a string `name` is skipped, as is a template of the wrong shape."""
    json_policy = policy.get("jsonPolicy")
    found: dict[str, list[dict[str, Any]]] = {}
    if not isinstance(json_policy, dict):
        return found
    for _, template_name in MEMBERS:
        template = json_policy.get(template_name)
        items = template.get("properties") if isinstance(template, dict) else None
        if isinstance(items, list):
            found[template_name] = [
                item
                for item in items
                if isinstance(item, dict) and isinstance(item.get("name"), str)
            ]
    return found


def _field_schema(item: Mapping[str, Any], where: str, unchecked: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = dict(_TYPES.get(str(item.get("type")), {}))
    for keyword in _COPIED:
        if keyword in item:
            schema[keyword] = item[keyword]
    pattern = item.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error:
            unchecked.append(f"{where}.pattern")
        else:
            schema["pattern"] = pattern
    for keyword in _ANNOTATIONS:
        if keyword in item:
            schema[keyword] = item[keyword]
    messages = item.get("message")
    if isinstance(messages, dict):
        schema[MESSAGES] = {k: v for k, v in messages.items() if isinstance(v, str)}
    return schema


def _condition(item: Mapping[str, Any]) -> dict[str, Any] | None:
    rule = item.get(REQUIRED_IF)
    if not isinstance(rule, dict):
        return None
    other, values = rule.get("name"), rule.get("enum")
    if not isinstance(other, str) or not isinstance(values, list):
        return None
    return {
        "if": {"properties": {other: {"enum": values}}, "required": [other]},
        "then": {"required": [item["name"]]},
    }


def template_schema(template_name: str, items: list[dict[str, Any]]) -> Converted:
    """One template's field list as the JSON Schema of an object (module docstring)."""
    unchecked: list[str] = []
    properties = {
        item["name"]: _field_schema(item, f"{template_name}.{item['name']}", unchecked)
        for item in items
    }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    required = [item["name"] for item in items if item.get("required") is True]
    if required:
        schema["required"] = required
    conditions = [c for c in map(_condition, items) if c is not None]
    if conditions:
        schema["allOf"] = conditions
    return Converted(schema, unchecked)


def request_schema(policy: Mapping[str, Any]) -> Converted:
    """The JSON Schema a registration request must meet for `policy` (module docstring)."""
    found = templates(policy)
    properties: dict[str, Any] = {}
    required: list[str] = []
    unchecked: list[str] = []
    multi = policy.get("policyMultiType") == "MULTI_SENDER"
    for member, template_name in MEMBERS:
        items = found.get(template_name)
        if not items:
            continue
        converted = template_schema(template_name, items)
        unchecked += converted.unchecked
        if member == "senderIds":
            properties[member] = {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_SENDER_IDS if multi else 1,
                "items": converted.schema,
            }
        else:
            properties[member] = converted.schema
        required.append(member)
    schema: dict[str, Any] = {"$schema": DRAFT, "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return Converted(schema, unchecked)
