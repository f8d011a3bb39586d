"""The registration facts read from a Sinch document, and the callback's share of them. Pure.

Internal services ask by sender ID, market and tag, and ask why a registration stands where it
does; those answers are buried in Sinch's document (docs/sinch.md). They are read here once, when
a document is applied, into columns the API filters on (app/core/models.py), never dug out of
JSON at query time.

Sinch's shapes are partly unknown and may change, so reading is lenient: anything of the wrong
shape counts as absent, and the rest is read. Nothing raises on any JSON value, and every string
kept is text the database can store, cut to the columns' sizes:

- `senderIds`: `requestDetails[].senderIdDetails[].senderId`, in Sinch's order, each once (either
  list may also be a single object; a number is read as its text), at most `MAX_SENDER_IDS`;
- `marketCode`: a top-level `marketCode` when the document has one (the policy's market is looked
  up separately: app/registrations/markets.py);
- `policyId`, `tags` (strings only, each once), `etaDate` (a date, or the date of a time), `price`
  (an object, kept as sent);
- `reason`: the newest entry of `logs[]` by `createTime` (their order is unknown) that has a
  message; an entry without a readable time counts as older than any with one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from app.core.db import is_storable_text
from app.sinch.schemas import parse_sinch_time

MAX_TEXT: Final = 255
"""Longest sender ID, tag or policy id kept (a sender ID is at most 11 characters, or a number)."""
MAX_MARKET_CODE: Final = 16
MAX_STATE: Final = 64
MAX_SENDER_IDS: Final = 200
"""A MULTI_SENDER policy allows 50; more are kept up to this bound, the rest ignored."""
MAX_TAGS: Final = 100
MAX_MESSAGE: Final = 65536
"""A log message longer than this is cut (Sinch's are sentences; this bounds a row)."""

FACT_STATES: Final = frozenset(
    {"REJECTED", "PENDING", "PENDING_ATTACHMENTS", "ON_HOLD", "APPROVED"}
)
"""States whose meaning lives in Sinch's logs or document: a registration that enters one by a
callback is fetched once more, so its reason and facts are fresh (app/worker/tasks.py)."""


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a registration stands where it does: a log entry of Sinch's, or a callback's comments."""

    message: str
    state: str | None
    at: datetime | None


@dataclass(frozen=True, slots=True)
class DocumentFacts:
    sender_ids: tuple[str, ...] = ()
    market_code: str | None = None
    """The document's own top-level `marketCode`; None when it has none."""
    policy_id: str | None = None
    tags: tuple[str, ...] = ()
    eta_date: date | None = None
    price: dict[str, Any] | None = None
    reason: Reason | None = None


def read_facts(document: object) -> DocumentFacts:
    """The facts of a registration document, as the module docstring says. Never raises."""
    if not isinstance(document, dict):
        return DocumentFacts()
    price = document.get("price")
    return DocumentFacts(
        sender_ids=_distinct(_sender_ids(document.get("requestDetails")), MAX_SENDER_IDS),
        market_code=_text(document.get("marketCode"), MAX_MARKET_CODE),
        policy_id=_text(document.get("policyId"), MAX_TEXT),
        tags=_distinct(_items(document.get("tags")), MAX_TAGS),
        eta_date=_date(document.get("etaDate")),
        price=price if isinstance(price, dict) else None,
        reason=newest_log(document.get("logs")),
    )


def callback_reason(comments: object, state: str | None, at: datetime | None) -> Reason | None:
    """The reason a callback gives: its `comments`, when it has readable ones."""
    message = message_text(comments)
    return Reason(message=message, state=state, at=at) if message is not None else None


def message_text(value: object) -> str | None:
    """A log message or a callback's comments as kept: storable text, cut at `MAX_MESSAGE`."""
    if not isinstance(value, str) or not value.strip() or not is_storable_text(value):
        return None
    return value if len(value) <= MAX_MESSAGE else value[: MAX_MESSAGE - 1] + "…"


def newest_log(logs: object) -> Reason | None:
    """The newest entry of `logs` that has a message (see the module docstring)."""
    newest: tuple[datetime | None, int, Reason] | None = None
    for position, entry in enumerate(_objects(logs)):
        message = message_text(entry.get("message"))
        if message is None:
            continue
        at = parse_sinch_time(entry.get("createTime"))
        state = _text(entry.get("registrationState"), MAX_STATE)
        candidate = (at, position, Reason(message=message, state=state, at=at))
        if newest is None or _later(candidate[:2], newest[:2]):
            newest = candidate
    return newest[2] if newest is not None else None


def _later(a: tuple[datetime | None, int], b: tuple[datetime | None, int]) -> bool:
    """Whether log `a` is newer than `b`: by time, a timed entry over an untimed one, and among
    equals the later in the list."""
    (a_at, a_pos), (b_at, b_pos) = a, b
    if a_at is None or b_at is None:
        return b_at is None and (a_at is not None or a_pos > b_pos)
    return a_at > b_at or (a_at == b_at and a_pos > b_pos)


def _sender_ids(request_details: object) -> Iterator[object]:
    for details in _objects(request_details):
        for sender in _objects(details.get("senderIdDetails")):
            yield sender.get("senderId")


def _objects(value: object) -> Iterator[dict[str, Any]]:
    """The objects of a list (others skipped), or a single object as a list of one."""
    if isinstance(value, dict):
        yield value
    elif isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def _items(value: object) -> Iterable[object]:
    return value if isinstance(value, list) else ()


def _distinct(values: Iterable[object], bound: int) -> tuple[str, ...]:
    kept: dict[str, None] = {}
    for value in values:
        text = _text(value, MAX_TEXT)
        if text is not None:
            kept.setdefault(text)
            if len(kept) == bound:
                break
    return tuple(kept)


def _text(value: object, limit: int) -> str | None:
    """A short identifier as kept: a non-empty string (or an integer's text) of at most `limit`
    characters that the database can store; anything else is None (never a cut identifier)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= 10**limit:  # longer than kept, and str() refuses the largest ints
            return None
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > limit or not is_storable_text(value):
        return None
    return value


def _date(value: object) -> date | None:
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    at = parse_sinch_time(value)
    return at.date() if at is not None else None


def fact_columns(facts: DocumentFacts, market_code: str | None) -> dict[str, Any]:
    """The `registrations` columns a document's facts set (`market_code` resolved by the caller).
    A document without a readable log keeps the reason already known: absent is not "no reason"."""
    columns: dict[str, Any] = {
        "sender_ids": list(facts.sender_ids),
        "tags": list(facts.tags),
        "market_code": market_code,
        "policy_id": facts.policy_id,
        "eta_date": facts.eta_date,
        "price": facts.price,
    }
    if facts.reason is not None:
        columns |= reason_columns(facts.reason)
    return columns


def reason_columns(reason: Reason) -> dict[str, Any]:
    return {"reason_message": reason.message, "reason_state": reason.state, "reason_at": reason.at}
