"""What changed between two versions of a policy document, field by field. Pure.

A policy is read as named fields (`fields`): each template's field rules by
`<template>.<name>` (`senderIdTemplate.senderId`), each attachment definition by
`attachments.<id>`, the rest of `jsonPolicy` by `jsonPolicy.<key>`, and every other top-level
member by its name (`policyStatus`, `statusDisclaimer`, `price`, ...). `id` is left out: Sinch
names a policy's version with it, and the catalog keys a policy by the id it was asked for.
`diff` answers the fields added, changed (with their value before and after) and removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from app.catalog.schema import MEMBERS

_TEMPLATE_NAMES: Final = frozenset(template for _, template in MEMBERS)


def fields(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The policy's named fields (module docstring)."""
    found: dict[str, Any] = {}
    for key, value in policy.items():
        if key == "id":
            continue
        if key == "jsonPolicy" and isinstance(value, dict):
            for name, template in value.items():
                items = template.get("properties") if isinstance(template, dict) else None
                if name in _TEMPLATE_NAMES and isinstance(items, list):
                    for index, item in enumerate(items):
                        label = item.get("name") if isinstance(item, dict) else None
                        found[f"{name}.{label if isinstance(label, str) else f'#{index}'}"] = item
                    rest = {k: v for k, v in template.items() if k != "properties"}
                    if rest:
                        found[f"jsonPolicy.{name}"] = rest
                else:
                    found[f"jsonPolicy.{name}"] = template
        elif key == "attachments" and isinstance(value, list):
            for index, item in enumerate(value):
                label = item.get("id") if isinstance(item, dict) else None
                found[f"attachments.{label if isinstance(label, str) else f'#{index}'}"] = item
        else:
            found[key] = value
    return found


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """`{"added": [{field, after}], "changed": [{field, before, after}], "removed": [{field,
    before}]}`, each list by field name; all three empty when nothing a field holds changed."""
    old, new = fields(before), fields(after)
    return {
        "added": [{"field": k, "after": new[k]} for k in sorted(new.keys() - old.keys())],
        "changed": [
            {"field": k, "before": old[k], "after": new[k]}
            for k in sorted(old.keys() & new.keys())
            if old[k] != new[k]
        ],
        "removed": [{"field": k, "before": old[k]} for k in sorted(old.keys() - new.keys())],
    }


def is_empty(changes: Mapping[str, list[Any]]) -> bool:
    return not any(changes.values())
