"""The simulator's memory: registrations, their callback events, tokens, faults and counters.

Plain synchronous code run on the server's event loop only, so it needs no locks. Times are naive
UTC datetimes with whole seconds, formatted the way Sinch writes them (`2021-11-03T14:30:03`).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

DEFAULT_REGISTRATION_TYPE = "ALPHANUMERIC_SENDER_ID"
INITIAL_STATUS = "IN_QUEUE"
EVENT_TYPE = "REGISTRATION_STATUS_UPDATE"
STAT_KINDS = (
    "token",
    "tokenRejected",
    "getRegistration",
    "listRegistrations",
    "callbackConfiguration",
    "putCallbackConfiguration",
    "unauthorized",
    "faultsInjected",
    "delivered",
)

FaultPaths = Literal["api", "token", "all"]
RequestKind = Literal["api", "token"]


class SimulatorInputError(ValueError):
    """A request to the simulator that cannot be honoured (answered 400)."""


class UnknownRegistrationError(KeyError):
    """No registration has that id (answered 404)."""


def format_time(value: datetime) -> str:
    """Sinch's time format: UTC, whole seconds, no offset."""
    return value.strftime("%Y-%m-%dT%H:%M:%S")


def parse_time(text: str) -> datetime:
    """A naive UTC datetime (whole seconds) from ISO 8601 text; a bare date means its midnight.

    An offset or `Z` is converted to UTC; no offset means UTC. Raises SimulatorInputError.
    """
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError:
            raise SimulatorInputError(f"not an ISO 8601 time: {text!r}") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed.replace(microsecond=0)


def _is_date_only(text: str) -> bool:
    return "T" not in text.upper() and " " not in text.strip()


@dataclass(slots=True)
class Fault:
    """An injected fault for the next `count` requests on `paths`."""

    kind: Literal["status", "hang"]
    count: int
    paths: FaultPaths = "api"
    status: int = 503
    retry_after: float | None = None
    delay_seconds: float = 0.0

    def matches(self, kind: RequestKind) -> bool:
        return self.count > 0 and (self.paths == "all" or self.paths == kind)


@dataclass(slots=True)
class _Registration:
    seq: int
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ListFilters:
    """Sinch's list filters, already parsed. Bounds are inclusive, at whole seconds."""

    registration_type: str = DEFAULT_REGISTRATION_TYPE
    registration_state: str | None = None
    update_from: datetime | None = None
    update_before: datetime | None = None  # exclusive
    create_from: datetime | None = None
    create_before: datetime | None = None  # exclusive
    tags: tuple[str, ...] = ()


def list_filters(
    *,
    registration_type: str | None,
    registration_state: str | None,
    update_date_from: str | None,
    update_date_to: str | None,
    create_date_from: str | None,
    create_date_to: str | None,
    tags: Sequence[str],
) -> ListFilters:
    """Parse the list query's filters; raises SimulatorInputError for an unreadable time."""

    def lower(text: str | None) -> datetime | None:
        return parse_time(text) if text else None

    def upper(text: str | None) -> datetime | None:
        # A bare date as an upper bound includes that whole day.
        if not text:
            return None
        parsed = parse_time(text)
        return parsed + (timedelta(days=1) if _is_date_only(text) else timedelta(seconds=1))

    return ListFilters(
        registration_type=registration_type or DEFAULT_REGISTRATION_TYPE,
        registration_state=registration_state or None,
        update_from=lower(update_date_from),
        update_before=upper(update_date_to),
        create_from=lower(create_date_from),
        create_before=upper(create_date_to),
        tags=tuple(tags),
    )


@dataclass(slots=True)
class SimulatorState:
    """Everything the simulator knows. `now` and `monotonic` are injectable clocks."""

    project_id: str
    key_id: str
    key_secret: str
    hmac_secret: str
    token_ttl_seconds: int = 3600
    seed: int | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    monotonic: Callable[[], float] = time.monotonic
    rng: random.Random = field(init=False)
    registrations: dict[str, _Registration] = field(init=False, default_factory=dict)
    events: list[dict[str, Any]] = field(init=False, default_factory=list)
    events_by_id: dict[str, dict[str, Any]] = field(init=False, default_factory=dict)
    tokens: dict[str, float] = field(init=False, default_factory=dict)
    faults: list[Fault] = field(init=False, default_factory=list)
    stats: Counter[str] = field(init=False, default_factory=Counter)
    current_hmac_secret: str = field(init=False)
    _seq: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.current_hmac_secret = self.hmac_secret

    def reset(self) -> None:
        """Forget registrations, events, faults and counters; restore the first HMAC secret.

        Issued tokens stay valid, so a client holding one is not surprised by a 401.
        """
        self.registrations.clear()
        self.events.clear()
        self.events_by_id.clear()
        self.faults.clear()
        self.stats.clear()
        self.current_hmac_secret = self.hmac_secret
        self.rng = random.Random(self.seed)

    def stats_snapshot(self) -> dict[str, int]:
        return {kind: self.stats[kind] for kind in STAT_KINDS} | dict(self.stats)

    # --- tokens ---------------------------------------------------------------------------

    def check_credentials(self, key_id: str, key_secret: str) -> bool:
        id_ok = secrets.compare_digest(key_id.encode(), self.key_id.encode())
        secret_ok = secrets.compare_digest(key_secret.encode(), self.key_secret.encode())
        return id_ok and secret_ok

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self.monotonic() + self.token_ttl_seconds
        return token

    def token_is_valid(self, token: str) -> bool:
        expires_at = self.tokens.get(token)
        if expires_at is None:
            return False
        if self.monotonic() >= expires_at:
            del self.tokens[token]
            return False
        return True

    def revoke_tokens(self) -> int:
        count = len(self.tokens)
        self.tokens.clear()
        return count

    # --- faults ---------------------------------------------------------------------------

    def take_fault(self, kind: RequestKind) -> Fault | None:
        """The fault the next request of `kind` gets, if any (its count is used up by one)."""
        for fault in self.faults:
            if fault.matches(kind):
                fault.count -= 1
                self.stats["faultsInjected"] += 1
                self.faults = [f for f in self.faults if f.count > 0]
                return fault
        return None

    # --- registrations --------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.now().astimezone(UTC).replace(tzinfo=None, microsecond=0)

    def get(self, registration_id: str) -> dict[str, Any]:
        """A copy of the registration's document; UnknownRegistrationError when there is none."""
        found = self.registrations.get(registration_id)
        if found is None:
            raise UnknownRegistrationError(registration_id)
        return copy.deepcopy(found.document)

    def all_documents(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(r.document) for r in self.registrations.values()]

    def create(
        self,
        *,
        registration_id: str | None = None,
        registration_type: str | None = None,
        status: str | None = None,
        callback_url: str | None = None,
        at: str | None = None,
        tags: Sequence[str] = (),
        sender_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a registration and record the callback event of its first state."""
        reg_id = registration_id or str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if reg_id in self.registrations:
            raise SimulatorInputError(f"registration {reg_id} exists already")
        when = parse_time(at) if at else self._now()
        state = status or INITIAL_STATUS
        stamp = format_time(when)
        self._seq += 1
        document: dict[str, Any] = {
            "id": reg_id,
            "status": state,
            "registrationType": registration_type or DEFAULT_REGISTRATION_TYPE,
            "policyId": "sim-policy-gb-alphanumeric",
            "callbackUrl": callback_url,
            "notificationContacts": [],
            "tags": list(tags),
            "createTime": stamp,
            "updateTime": stamp,
            "etaDate": (when + timedelta(days=7)).date().isoformat(),
            "price": {
                "currency": "EUR",
                "frequency": "MONTHLY",
                "mode": "AUTOMATIC",
                "recurrentFeeAmount": "10.00",
                "setupFeeAmount": "0.00",
            },
            "requestDetails": [
                {
                    "additionalDetails": [],
                    "senderIdDetails": [{"senderId": sender_id or f"SIM{self._seq:05d}"}],
                }
            ],
            "attachments": [],
            "logs": [
                {
                    "createTime": stamp,
                    "message": "Registration submitted",
                    "registrationState": state,
                }
            ],
        }
        document.update(copy.deepcopy(extra or {}))
        self.registrations[reg_id] = _Registration(seq=self._seq, document=document)
        self._record_event(reg_id, state, stamp, comments=None)
        return copy.deepcopy(document)

    def transition(
        self,
        registration_id: str,
        status: str,
        *,
        at: str | None = None,
        comment: str | None = None,
    ) -> dict[str, Any]:
        """Move the registration to `status` (any string) and record its callback event.

        Without `at`, the time is now but at least one second after the previous `updateTime`, so
        a quick lifecycle still has distinct whole-second times. Answers the event.
        """
        found = self.registrations.get(registration_id)
        if found is None:
            raise UnknownRegistrationError(registration_id)
        document = found.document
        if at:
            when = parse_time(at)
        else:
            when = self._now()
            previous = document.get("updateTime")
            if isinstance(previous, str):
                when = max(when, parse_time(previous) + timedelta(seconds=1))
        stamp = format_time(when)
        document["status"] = status
        document["updateTime"] = stamp
        document["logs"].append(
            {
                "createTime": stamp,
                "message": comment or f"Status changed to {status}",
                "registrationState": status,
            }
        )
        return self._record_event(registration_id, status, stamp, comments=comment)

    def _record_event(
        self, registration_id: str, status: str, stamp: str, *, comments: str | None
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "eventId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "eventType": EVENT_TYPE,
            "projectId": self.project_id,
            "resourceId": registration_id,
            "resourceType": "REGISTRATION",
            "status": status,
            "createTime": stamp,
        }
        if comments:
            event["comments"] = comments
        self.events.append(event)
        self.events_by_id[event["eventId"]] = event
        return copy.deepcopy(event)

    def events_of(self, registration_id: str) -> list[dict[str, Any]]:
        if registration_id not in self.registrations:
            raise UnknownRegistrationError(registration_id)
        return [copy.deepcopy(e) for e in self.events if e["resourceId"] == registration_id]

    def events_named(self, event_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The events with these ids, in the order given; SimulatorInputError for an unknown id."""
        chosen = []
        for event_id in event_ids:
            event = self.events_by_id.get(event_id)
            if event is None:
                raise SimulatorInputError(f"unknown event id {event_id!r}")
            chosen.append(copy.deepcopy(event))
        return chosen

    # --- listing --------------------------------------------------------------------------

    def list_page(
        self, filters: ListFilters, *, page_size: int, page_token: str | None
    ) -> tuple[list[dict[str, Any]], str, int]:
        """One page: (documents, next page token or "", total matching).

        The cursor is the creation sequence of the last registration answered, so a walk is stable
        while registrations are created or updated: each one matching throughout is seen once.
        """
        after = _decode_page_token(page_token) if page_token else 0
        matching = [r for r in self.registrations.values() if _matches(r.document, filters)]
        rest = [r for r in matching if r.seq > after]
        page = rest[:page_size]
        next_token = _encode_page_token(page[-1].seq) if len(rest) > page_size else ""
        return [copy.deepcopy(r.document) for r in page], next_token, len(matching)


def _matches(document: dict[str, Any], filters: ListFilters) -> bool:
    if document.get("registrationType") != filters.registration_type:
        return False
    if filters.registration_state and document.get("status") != filters.registration_state:
        return False
    if filters.tags and not set(filters.tags) <= set(document.get("tags") or []):
        return False
    updated = parse_time(document["updateTime"])
    created = parse_time(document["createTime"])
    if filters.update_from and updated < filters.update_from:
        return False
    if filters.update_before and updated >= filters.update_before:
        return False
    if filters.create_from and created < filters.create_from:
        return False
    return not (filters.create_before and created >= filters.create_before)


def _encode_page_token(seq: int) -> str:
    raw = json.dumps({"after": seq}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str) -> int:
    try:
        padded = token + "=" * (-len(token) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise SimulatorInputError("invalid pageToken") from None
    if not isinstance(after, int):
        raise SimulatorInputError("invalid pageToken")
    return after
