"""What changed between two versions of a document, field by field. Pure.

One comparison (`compare`) over documents read as named fields, for two kinds of documents:

- A policy (`diff`, the catalog's `policy_changes`) is read as named fields (`fields`): each
  template's field rules by `<template>.<name>` (`senderIdTemplate.senderId`), each attachment
  definition by `attachments.<id>`, the rest of `jsonPolicy` by `jsonPolicy.<key>`, and every other
  top-level member by its name (`policyStatus`, `statusDisclaimer`, `price`, ...). `id` is left out:
  Sinch names a policy's version with it, and the catalog keys a policy by the id it was asked for.
  `diff` answers the fields added, changed (with their value before and after) and removed.
- A registration document (`document_changes`, the versions a registration kept) is read down to
  its leaves (`leaves`): every value that is not a non-empty object or array is one field, named by
  its JSON path (`$.requestDetails[0].senderIdDetails[0].senderId`, app/catalog/check.py's
  `json_path`, the paths the policy check answers). An array's items are named by position: an
  item inserted before others shows as those changed and one added (Sinch's arrays, such as
  `logs`, grow at their end).

`digest` names a document's content, so that two equal documents are known equal without
comparing them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from app.catalog.check import json_path
from app.catalog.schema import MEMBERS

_TEMPLATE_NAMES: Final = frozenset(template for _, template in MEMBERS)
_ABSENT: Final = object()


class FieldChangeKind(StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs: its name, how, and its value before and after (None where the
    field was absent; a JSON null present is None too, told apart by `change`)."""

    path: str
    change: FieldChangeKind
    before: Any = None
    after: Any = None


def digest(document: Mapping[str, Any]) -> str:
    """SHA-256 of the document's canonical JSON (sorted keys): equal documents, equal digests."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    """Every field of `old` and `new` (name to value) that differs, by name."""
    found: list[FieldChange] = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name, _ABSENT), new.get(name, _ABSENT)
        if before is _ABSENT:
            found.append(FieldChange(name, FieldChangeKind.ADDED, after=after))
        elif after is _ABSENT:
            found.append(FieldChange(name, FieldChangeKind.REMOVED, before=before))
        elif before != after:
            found.append(FieldChange(name, FieldChangeKind.CHANGED, before, after))
    return found


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
    grouped: dict[str, list[dict[str, Any]]] = {kind.value: [] for kind in FieldChangeKind}
    for change in compare(fields(before), fields(after)):
        entry: dict[str, Any] = {"field": change.path}
        if change.change != FieldChangeKind.ADDED:
            entry["before"] = change.before
        if change.change != FieldChangeKind.REMOVED:
            entry["after"] = change.after
        grouped[change.change.value].append(entry)
    return grouped


def is_empty(changes: Mapping[str, list[Any]]) -> bool:
    return not any(changes.values())


def leaves(document: Any) -> dict[str, Any]:
    """A registration document's fields by JSON path (module docstring); `{}` and `[]` are
    leaves, so that a member emptied is a change, not a removal."""
    found: dict[str, Any] = {}

    def walk(value: Any, parts: list[str | int]) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(item, [*parts, str(key)])
        elif isinstance(value, list) and value:
            for index, item in enumerate(value):
                walk(item, [*parts, index])
        else:
            found[json_path(parts)] = value

    walk(document, [])
    return found


def document_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[FieldChange]:
    """What changed from one registration document to the next, leaf by leaf, by path."""
    return compare(leaves(before), leaves(after))
