"""What a registration waiting on the customer is asked about, where its policy tells (the
`fields` and `attachments` of `needsAction`). Pure: no I/O.

- Attachments (PENDING_ATTACHMENTS): the policy's mandatory attachments that Sinch's document
  does not list among its `attachments[]` (an entry whose `uploadStatus` is `FAILED` does not
  count as uploaded).
- Fields and attachments Sinch's message names (PENDING, REJECTED, and PENDING_ATTACHMENTS too):
  Sinch's log messages are free text, so a field is named only when the message contains the
  field's `title` or its `name` as whole words, ignoring case ("Provide the website ..." names
  `website`, titled "Website"); an attachment likewise by its `title` or `id`. A message that
  names none gives none: nothing is guessed. A name or title under `MIN_WORD_LENGTH` characters
  is not looked for (too likely to be an ordinary word).

Fields are answered as paths into the registration's document from Sinch, which is laid out as
Sinch's update body (app/catalog/layout.py), so a caller knows what to change in its `PUT`:
`$.requestDetails[0].additionalDetails[0].companyDetails.website`,
`$.requestDetails[0].senderIdDetails[*].useCase` (every sender ID's). Where the document holds
no such member yet, the path is where an update would put it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from app.catalog import layout
from app.catalog.schema import MEMBERS, templates

MIN_WORD_LENGTH: Final = 4
FAILED_UPLOAD: Final = "FAILED"
_SENDERS_MEMBER: Final = "senderIds"


def _definitions(policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        a
        for a in policy.get("attachments") or []
        if isinstance(a, dict) and isinstance(a.get("id"), str)
    ]


def _said(message: str, *words: object) -> bool:
    """Whether `message` holds one of `words` as whole words, ignoring case."""
    for word in words:
        if isinstance(word, str) and len(word.strip()) >= MIN_WORD_LENGTH:
            pattern = r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)"
            if re.search(pattern, message, re.IGNORECASE):
                return True
    return False


def _field_path(member: str, name: str) -> str:
    where = f"$.{member}[*]" if member == _SENDERS_MEMBER else f"$.{member}"
    return f"{where}.{name}"


def named_fields(
    policy: Mapping[str, Any], message: str, document: Mapping[str, Any] | None
) -> list[str]:
    """The paths into Sinch's `document` of the policy's fields `message` names (module
    docstring), in the policy's order."""
    found = templates(policy)
    where = layout.from_sinch(document or {}).where
    return [
        layout.moved(where, _field_path(member, item["name"]))
        for member, template_name in MEMBERS
        for item in found.get(template_name, [])
        if _said(message, item.get("title"), item["name"])
    ]


def named_attachments(policy: Mapping[str, Any], message: str) -> list[str]:
    """The ids of the policy's attachments `message` names, in the policy's order."""
    return [a["id"] for a in _definitions(policy) if _said(message, a.get("title"), a["id"])]


def missing_attachments(policy: Mapping[str, Any], document: Mapping[str, Any] | None) -> list[str]:
    """The ids of the policy's mandatory attachments Sinch's `document` does not list as
    uploaded, in the policy's order."""
    listed = (document or {}).get("attachments")
    uploaded = {
        a.get("attachmentId")
        for a in (listed if isinstance(listed, list) else [])
        if isinstance(a, dict) and a.get("uploadStatus") != FAILED_UPLOAD
    }
    return [
        a["id"]
        for a in _definitions(policy)
        if a.get("mandatory") is True and a["id"] not in uploaded
    ]
