"""The simulator's memory: registrations, their callback events, tokens, faults and counters, and
its fixed policy catalog (`POLICIES`) with the market versions built from it (`MARKET_VERSIONS`).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal

from devtools.simulator.catalog import POLICY_DOCUMENTS, SimCatalog

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
    "marketDetails",
    "getPolicy",
    "unauthorized",
    "faultsInjected",
    "delivered",
)

FaultPaths = Literal["api", "token", "all"]
RequestKind = Literal["api", "token"]
PolicyMultiType = Literal["SINGLE", "MULTI_SENDER"]

MAX_SENDER_IDS = 50
"""Sender IDs one MULTI_SENDER registration may carry (Sinch's documented bound)."""


# --- the policy catalog ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimPolicy:
    """A policy of the simulator's catalog.

    `market_code` None: no market version names it, so its registrations have no market.
    `registration_type` None: it serves any type. `answers` are the answers that lead to it in
    its market version's special conditions (more than one: a nested chain). `weight` is how often
    a registration of its type gets it when the caller names no policy.
    """

    id: str
    market_code: str | None
    registration_type: str | None
    multi_type: PolicyMultiType
    weight: int
    answers: tuple[str, ...] = ()
    price: Mapping[str, str] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The policy as `GET /policies/{policyId}` answers it (devtools/simulator/catalog.py),
        with the registration type it serves."""
        document = copy.deepcopy(dict(POLICY_DOCUMENTS[self.id]))
        return document | {"registrationType": self.registration_type}


def _price(currency: str, recurrent: str, setup: str) -> dict[str, str]:
    return {
        "currency": currency,
        "frequency": "MONTHLY",
        "mode": "AUTOMATIC",
        "recurrentFeeAmount": recurrent,
        "setupFeeAmount": setup,
    }


POLICIES: Mapping[str, SimPolicy] = MappingProxyType(
    {
        policy.id: policy
        for policy in (
            SimPolicy(
                id="sim-policy-gb-alphanumeric",
                market_code="GB",
                registration_type="ALPHANUMERIC_SENDER_ID",
                multi_type="SINGLE",
                weight=6,
                answers=("Yes",),
                price=_price("EUR", "10.00", "0.00"),
            ),
            SimPolicy(
                id="sim-policy-se-alphanumeric-multi",
                market_code="SE",
                registration_type="ALPHANUMERIC_SENDER_ID",
                multi_type="MULTI_SENDER",
                weight=3,
                answers=("Yes", "Several sender IDs"),
                price=_price("SEK", "95.00", "250.00"),
            ),
            SimPolicy(
                id="sim-policy-us-longnumber",
                market_code="US",
                registration_type="LONG_NUMBER",
                multi_type="SINGLE",
                weight=9,
                answers=("Standard",),
                price=_price("USD", "4.00", "15.00"),
            ),
            SimPolicy(
                id="sim-policy-unlisted",
                market_code=None,
                registration_type=None,
                multi_type="SINGLE",
                weight=1,
                price=_price("EUR", "12.50", "0.00"),
            ),
            # Never picked by chance (weight 0): only a caller naming them gets them.
            SimPolicy(
                id="sim-policy-de-alphanumeric",
                market_code="DE",
                registration_type="ALPHANUMERIC_SENDER_ID",
                multi_type="SINGLE",
                weight=0,
                answers=("Yes",),
                price=_price("EUR", "15.00", "50.00"),
            ),
            SimPolicy(
                id="sim-policy-fr-alphanumeric",
                market_code="FR",
                registration_type="ALPHANUMERIC_SENDER_ID",
                multi_type="SINGLE",
                weight=0,
                answers=("Yes",),
                price=_price("EUR", "20.00", "100.00"),
            ),
            SimPolicy(
                id="sim-policy-au-shortcode",
                market_code="AU",
                registration_type="SHORT_CODE",
                multi_type="SINGLE",
                weight=0,
                answers=("Standard",),
                price=_price("AUD", "0.00", "0.00"),
            ),
        )
    }
)
"""The simulator's policies (what each asks for: devtools/simulator/catalog.py). The unlisted one
is in no market version (its registrations have no market) and serves any type; a type no listed
policy of weight above 0 serves (SHORT_CODE, RCS_AGENT) always gets it.
"""

_PROMPTS: Mapping[str, str] = MappingProxyType(
    {
        "ALPHANUMERIC_SENDER_ID": "Are you the brand owner of the sender ID to be registered?",
        "LONG_NUMBER": "Which type of number do you want?",
    }
)
_MARKET_VERSION_TIME = "2024-09-12T10:45:30.594765Z"


def _market_versions() -> tuple[dict[str, Any], ...]:
    """One market version per market and registration type of the listed policies, shaped like
    Sinch's `GET /markets/details` entries (docs/sinch.md), in catalog order."""
    versions: dict[tuple[str, str], dict[str, Any]] = {}
    for policy in POLICIES.values():
        if policy.market_code is None or policy.registration_type is None:
            continue
        key = (policy.market_code, policy.registration_type)
        version = versions.get(key)
        if version is None:
            code, kind = key
            version = versions[key] = {
                "id": f"sim-market-{code.lower()}-{kind.lower().replace('_', '-')}",
                "marketCode": code,
                "registrationType": kind,
                "status": "ACTIVE",
                "majorVersion": 1,
                "minorVersion": 0,
                "createTime": _MARKET_VERSION_TIME,
                "specialConditions": {
                    "prompt": _PROMPTS.get(kind, "Which policy applies?"),
                    "chainedSpecialConditions": [],
                },
            }
        chain: list[dict[str, Any]] = version["specialConditions"]["chainedSpecialConditions"]
        answers = policy.answers or (policy.id,)
        for answer in answers[:-1]:  # intermediate answers: nodes without a policy of their own
            node = next((n for n in chain if n["answer"] == answer and "policyId" not in n), None)
            if node is None:
                node = {"answer": answer, "chainedSpecialConditions": []}
                chain.append(node)
            chain = node["chainedSpecialConditions"]
        chain.append({"policyId": policy.id, "answer": answers[-1], "chainedSpecialConditions": []})
    return tuple(versions.values())


MARKET_VERSIONS: tuple[dict[str, Any], ...] = _market_versions()
"""What the simulator's `GET /markets/details` serves (filtered and paged)."""

CANNED_REASONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "REJECTED": (
            "The sender ID is reserved for another brand",
            "The sender ID is too generic to be registered in this market",
            "The company documents do not match the brand of the sender ID",
        ),
        "PENDING": (
            "Describe the use case of the sender ID in more detail",
            "Provide the website where customers see the brand",
        ),
        "PENDING_ATTACHMENTS": (
            "Upload a letter of authorisation",
            "Upload the company registration certificate",
        ),
        "ON_HOLD": (
            "Waiting for the operator to review the registration",
            "The operator has paused new registrations in this market",
        ),
    }
)
"""The log message of a transition into one of these states that was given no comment."""

_USE_CASES = ("One-time passwords", "Transactional notifications", "Appointment reminders")
_TAG_POOL = ("#team-a", "#team-b", "#billing", "#marketing")


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


@dataclass(frozen=True, slots=True)
class _Log:
    at: datetime
    message: str
    state: str


@dataclass(slots=True)
class _Registration:
    """A registration: the document served, and the facts the simulator knows about it (its
    oracle, kept apart from the document so it is never read back out of it)."""

    seq: int
    document: dict[str, Any]
    policy_id: str
    sender_ids: tuple[str, ...]
    tags: list[str]
    eta_date: str
    price: dict[str, Any]
    status: str
    status_since: str
    logs: list[_Log]
    extra: dict[str, Any]


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
    added_market_versions: list[tuple[str, Any]] = field(init=False, default_factory=list)
    """(registration type, any JSON value) served after the catalog's market versions."""
    catalog: SimCatalog = field(init=False, default_factory=SimCatalog)
    """The policies as this project's Sinch serves them (revised ones included)."""
    attachment_files: dict[tuple[str, str], tuple[str, str, bytes]] = field(
        init=False, default_factory=dict
    )
    """(registration id, attachment id) -> (file name, MIME type, bytes) of each upload, in
    memory only: a restart keeps the documents' `attachments[]`, not the files."""
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
        self.added_market_versions.clear()
        self.catalog.reset()
        self.attachment_files.clear()
        self.stats.clear()
        self.current_hmac_secret = self.hmac_secret
        self.rng = random.Random(self.seed)

    # --- kept across restarts ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What a restart keeps, as JSON values: registrations (with their oracle facts), events,
        added market versions, the sequence and the random generator (so new ids stay new).
        Tokens, faults and counters are not kept: a restarted Sinch forgets them too."""
        registrations = []
        for registration in self.registrations.values():
            row = {name: getattr(registration, name) for name in _Registration.__slots__}
            row["sender_ids"] = list(registration.sender_ids)
            row["logs"] = [
                {"at": format_time(log.at), "message": log.message, "state": log.state}
                for log in registration.logs
            ]
            registrations.append(row)
        version, internal, gauss = self.rng.getstate()
        return {
            "version": 1,
            "seq": self._seq,
            "rng": [version, list(internal), gauss],
            "registrations": registrations,
            "events": self.events,
            "addedMarketVersions": [list(pair) for pair in self.added_market_versions],
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Take back what `snapshot` answered (of this simulator's version 1); ValueError else."""
        if saved.get("version") != 1:
            raise ValueError("not a simulator state of version 1")
        self.reset()
        for row in saved["registrations"]:
            logs = [
                _Log(at=parse_time(log["at"]), message=log["message"], state=log["state"])
                for log in row["logs"]
            ]
            registration = _Registration(
                **{**row, "sender_ids": tuple(row["sender_ids"]), "logs": logs}
            )
            self.registrations[registration.document["id"]] = registration
        for event in saved["events"]:
            self.events.append(event)
            self.events_by_id[event["eventId"]] = event
        self.added_market_versions.extend(
            (kind, value) for kind, value in saved["addedMarketVersions"]
        )
        self._seq = int(saved["seq"])
        version, internal, gauss = saved["rng"]
        self.rng.setstate((version, tuple(internal), gauss))

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
        tags: Sequence[str] | None = None,
        sender_id: str | None = None,
        sender_ids: Sequence[str] | None = None,
        policy_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a registration and record the callback event of its first state.

        `policy_id` names a policy of `POLICIES` (its type is then the default type); without one,
        the state's rng picks one of the type's (for ALPHANUMERIC_SENDER_ID mostly the GB single
        policy, often the SE multi-sender one, sometimes the unlisted one). `sender_ids` (or
        `sender_id`, a one-element shorthand) are the sender IDs, in order; without them they are
        generated: `SIM00001` for a single policy, 2-5 of `SIM00001A`, `SIM00001B`, ... for a
        multi-sender one. `tags` None: the rng may add one or two. `extra` fields are merged into
        the document last (a top-level `marketCode`, say, which Sinch's documents lack).
        Raises SimulatorInputError for a request Sinch would refuse.
        """
        reg_id = registration_id or str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if reg_id in self.registrations:
            raise SimulatorInputError(f"registration {reg_id} exists already")
        given = _given_sender_ids(sender_id, sender_ids)
        policy, kind = self._policy_for(policy_id, registration_type, given)
        when = parse_time(at) if at else self._now()
        state = status or INITIAL_STATUS
        stamp = format_time(when)
        self._seq += 1
        if given is None:
            if policy.multi_type == "SINGLE":
                given = (f"SIM{self._seq:05d}",)
            else:
                count = self.rng.randint(2, 5)
                given = tuple(f"SIM{self._seq:05d}{chr(ord('A') + i)}" for i in range(count))
        if tags is None:
            tags = self.rng.sample(_TAG_POOL, self.rng.choice((0, 0, 0, 1, 1, 2)))
        eta = (when + timedelta(days=self.rng.randint(3, 21))).date().isoformat()
        price = dict(policy.price)
        details = [{"senderId": s, "useCase": self.rng.choice(_USE_CASES)} for s in given]
        document: dict[str, Any] = {
            "id": reg_id,
            "status": state,
            "registrationType": kind,
            "policyId": policy.id,
            "callbackUrl": callback_url,
            "notificationContacts": [],
            "tags": list(tags),
            "createTime": stamp,
            "updateTime": stamp,
            "etaDate": eta,
            "price": copy.deepcopy(price),
            "requestDetails": [{"additionalDetails": [], "senderIdDetails": details}],
            "attachments": [],
            "logs": [
                {
                    "createTime": stamp,
                    "message": "Registration submitted",
                    "registrationState": state,
                }
            ],
        }
        extra = copy.deepcopy(extra or {})
        document.update(copy.deepcopy(extra))
        self.registrations[reg_id] = _Registration(
            seq=self._seq,
            document=document,
            policy_id=policy.id,
            sender_ids=given,
            tags=list(tags),
            eta_date=eta,
            price=price,
            status=str(document["status"]),
            status_since=stamp,
            logs=[] if "logs" in extra else [_Log(when, "Registration submitted", state)],
            extra=extra,
        )
        self._record_event(reg_id, state, stamp, comments=None)
        return copy.deepcopy(document)

    def _policy_for(
        self,
        policy_id: str | None,
        registration_type: str | None,
        sender_ids: tuple[str, ...] | None,
    ) -> tuple[SimPolicy, str]:
        """(the policy, the registration type) of a new registration."""
        several = sender_ids is not None and len(sender_ids) > 1
        if policy_id is not None:
            policy = POLICIES.get(policy_id)
            if policy is None:
                raise SimulatorInputError(f"unknown policy {policy_id!r} (see POLICIES)")
            kind = registration_type or policy.registration_type or DEFAULT_REGISTRATION_TYPE
            if policy.registration_type not in (None, kind):
                raise SimulatorInputError(
                    f"policy {policy_id} is for {policy.registration_type}, not {kind}"
                )
            if several and policy.multi_type == "SINGLE":
                raise SimulatorInputError(f"policy {policy_id} allows one sender ID")
            return policy, kind
        kind = registration_type or DEFAULT_REGISTRATION_TYPE
        candidates = [
            p
            for p in POLICIES.values()
            if p.registration_type in (None, kind) and not (several and p.multi_type == "SINGLE")
        ]
        if not candidates:
            raise SimulatorInputError(f"no policy for {kind} allows several sender IDs")
        [policy] = self.rng.choices(candidates, weights=[p.weight for p in candidates])
        return policy, kind

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
        a quick lifecycle still has distinct whole-second times. A comment (or, without one, a
        canned reason for a move into a state of `CANNED_REASONS`) is appended to the logs and
        sent as the event's `comments`; any other move adds no log. Answers the event.
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
        message = comment or None
        if message is None and status in CANNED_REASONS:
            message = self.rng.choice(CANNED_REASONS[status])
        if status != found.status:
            found.status = status
            found.status_since = stamp
        document["status"] = status
        document["updateTime"] = stamp
        if message is not None:
            entry = {"createTime": stamp, "message": message, "registrationState": status}
            if isinstance(document.get("logs"), list):
                document["logs"].append(entry)
            else:
                document["logs"] = [entry]
            found.logs.append(_Log(when, message, status))
        return self._record_event(registration_id, status, stamp, comments=message)

    def facts(self, registration_id: str) -> dict[str, Any]:
        """The registration facts as the simulator knows them (its oracle, not read back out of the
        document): the facts the service should end up with after reading this registration.

        `marketCode` is a top-level string `marketCode` given through `extra`, else the market of
        the policy (null for one in no market version). Fields `extra` replaced (`policyId`,
        `tags`, `etaDate`, `price`) are given as `extra` set them. When `extra` replaced
        `requestDetails`, `senderIds` is null (unknown here); when it replaced `logs`, `reason`
        considers only the entries the simulator wrote since. `reason` is the newest log entry (by
        time, then the later written) or null; `statusSince` the time the current status was
        entered (a move to the same status does not enter it again).
        """
        found = self.registrations.get(registration_id)
        if found is None:
            raise UnknownRegistrationError(registration_id)
        extra = found.extra
        policy_id = extra.get("policyId", found.policy_id)
        market = extra.get("marketCode")
        if not (isinstance(market, str) and market.strip()):
            policy = POLICIES.get(policy_id) if isinstance(policy_id, str) else None
            market = policy.market_code if policy is not None else None
        newest: _Log | None = None
        for entry in found.logs:  # in the order written: a tie goes to the later
            if newest is None or entry.at >= newest.at:
                newest = entry
        reason = (
            None
            if newest is None
            else {
                "message": newest.message,
                "state": newest.state,
                "at": format_time(newest.at),
            }
        )
        return copy.deepcopy(
            {
                "senderIds": None if "requestDetails" in extra else list(found.sender_ids),
                "marketCode": market,
                "policyId": policy_id,
                "tags": extra.get("tags", found.tags),
                "etaDate": extra.get("etaDate", found.eta_date),
                "price": extra.get("price", found.price),
                "statusSince": found.status_since,
                "reason": reason,
            }
        )

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

    # --- market details -------------------------------------------------------------------

    def add_market_versions(self, versions: Iterable[Any], *, registration_type: str | None) -> int:
        """Serve `versions` (any JSON values, odd ones included) after the catalog's in the list of
        `registration_type` (default ALPHANUMERIC_SENDER_ID), until reset; answers how many
        market versions that list now has."""
        kind = registration_type or DEFAULT_REGISTRATION_TYPE
        self.added_market_versions.extend((kind, copy.deepcopy(v)) for v in versions)
        return len(self._market_versions(kind, None))

    def _market_versions(self, kind: str, market_code: str | None) -> list[Any]:
        catalog = [
            v
            for v in MARKET_VERSIONS
            if v["registrationType"] == kind and (not market_code or v["marketCode"] == market_code)
        ]
        added = [
            v
            for k, v in self.added_market_versions
            if k == kind
            and (not market_code or (isinstance(v, dict) and v.get("marketCode") == market_code))
        ]
        return catalog + added

    def market_details_page(
        self,
        *,
        registration_type: str | None,
        market_code: str | None,
        page_size: int,
        page_token: str | None,
    ) -> tuple[list[Any], str, int]:
        """One page of market versions: (market versions, next page token or "", total matching).

        Like Sinch, the registration type defaults to ALPHANUMERIC_SENDER_ID: each type is its own
        list. Raises SimulatorInputError for an unreadable page token.
        """
        matching = self._market_versions(
            registration_type or DEFAULT_REGISTRATION_TYPE, market_code
        )
        start = _decode_page_token(page_token) if page_token else 0
        page = matching[start : start + page_size]
        end = start + len(page)
        next_token = _encode_page_token(end) if end < len(matching) else ""
        return copy.deepcopy(page), next_token, len(matching)

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


def policy_document(policy_id: str) -> dict[str, Any] | None:
    """The policy as `GET /policies/{policyId}` answers it; None for an unknown one."""
    policy = POLICIES.get(policy_id)
    return policy.document() if policy is not None else None


def _given_sender_ids(
    sender_id: str | None, sender_ids: Sequence[str] | None
) -> tuple[str, ...] | None:
    if sender_ids is None:
        return (sender_id,) if sender_id else None
    if sender_id:
        raise SimulatorInputError("give senderId or senderIds, not both")
    given = tuple(sender_ids)
    if not given or not all(isinstance(s, str) and s for s in given):
        raise SimulatorInputError("senderIds must be non-empty strings, at least one")
    if len(given) > MAX_SENDER_IDS:
        raise SimulatorInputError(f"at most {MAX_SENDER_IDS} sender IDs")
    if len(set(given)) != len(given):
        raise SimulatorInputError("senderIds repeat")
    return given


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
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise SimulatorInputError("invalid pageToken")
    return after
