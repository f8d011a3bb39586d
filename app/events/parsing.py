"""Lenient reading of a callback body. Pure.

The body's schema is not documented for this API (docs/sinch.md), so each field is looked up under
the names the sister Sinch APIs use, in order, and anything missing or malformed is reported as
None: the worker settles every doubt with a GET of the registration. The endpoint (for the ids it
keeps in their own columns) and the worker (for what it decides) read a body with this same
function, so both see the same ids: an id no database could store as text is malformed, hence None,
for both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core.db import is_storable_text
from app.registrations.facts import message_text
from app.sinch.schemas import parse_sinch_time

REGISTRATION_ID_KEYS = ("resourceId", "registrationId", "id")
STATUS_KEYS = ("status", "registrationState")
TIME_KEYS = ("createTime", "timestamp", "eventTime", "updateTime")
EVENT_ID_KEYS = ("eventId",)
MAX_ID_LENGTH = 255
# A registration id is a segment of the URL the worker GETs; these two would name another resource
# (URL normalisation removes them), so such an id cannot be checked with Sinch: it is unusable.
DOT_SEGMENTS = frozenset({".", ".."})
# Nor can an id holding "/": servers decode %2F before routing, so it would name another path.


@dataclass(frozen=True, slots=True)
class CallbackFields:
    """What a callback body says. `is_json_object` is False when the body is unusable as a whole."""

    is_json_object: bool
    event_id: str | None = None
    registration_id: str | None = None
    status: str | None = None
    event_time: datetime | None = None
    comments: str | None = None
    """Why the status changed, when the callback says (`comments`); the registration's reason."""


def body_digest(body: bytes) -> str:
    """The dedup key of a body without an event id."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def dedup_key(fields: CallbackFields, body: bytes) -> str:
    """The event's identity: Sinch's event id when the body has one, else a hash of the raw bytes.

    Two deliveries with the same key are the same event; history rows name an event by this key.
    """
    return fields.event_id if fields.event_id is not None else body_digest(body)


def parse_callback(body: bytes) -> CallbackFields:
    """Read the fields of docs/sinch.md from a raw body. Never raises."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return CallbackFields(is_json_object=False)
    if not isinstance(document, dict):
        return CallbackFields(is_json_object=False)
    return CallbackFields(
        is_json_object=True,
        event_id=_first_id(document, EVENT_ID_KEYS),
        registration_id=_first_id(document, REGISTRATION_ID_KEYS, refused=DOT_SEGMENTS),
        status=_first_text(document, STATUS_KEYS),
        event_time=_first_time(document, TIME_KEYS),
        comments=message_text(document.get("comments")),
    )


def read_claim(body: bytes) -> tuple[str | None, datetime | None]:
    """What a body claims, `(status, time)`, read exactly as `parse_callback` reads them (same
    keys, same rules), without the ids: the events API shows it for every listed event, so it is
    kept to the two fields (a third cheaper than `parse_callback`)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    return _first_text(document, STATUS_KEYS), _first_time(document, TIME_KEYS)


def _first_text(document: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = document.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _first_id(
    document: dict[str, Any], keys: tuple[str, ...], refused: frozenset[str] = frozenset()
) -> str | None:
    for key in keys:
        value = document.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            value = str(value)
        if isinstance(value, str):
            value = value.strip()
            if (
                value
                and len(value) <= MAX_ID_LENGTH
                and value not in refused
                and not (refused and "/" in value)
                and is_storable_text(value)
            ):
                return value
    return None


def _first_time(document: dict[str, Any], keys: tuple[str, ...]) -> datetime | None:
    for key in keys:
        parsed = parse_sinch_time(document.get(key))
        if parsed is not None:
            return parsed
    return None
