"""Where a registration's content sits in a request: Sinch's create and update body, and the
members the policy check reads. Pure: no I/O. THE one place to change when Sinch's real layout is
known (docs/sinch.md: where Sinch wants the company details and the contact person is not
documented); callers of the service, the check and the routes would not notice.

Sinch's layout is THE layout a caller sends (docs/api.md, Submitting registrations): Sinch's
top-level fields and the content under `requestDetails`:

    {"registrationType", "policyId", "tags", ..., "requestDetails": [{
        "senderIdDetails": [{"senderId": ..., ...}, ...],
        "additionalDetails": [{"companyDetails": {...}, "contactPerson": {...}}]}]}

`requestDetails[0].senderIdDetails` are the sender IDs the policy's `senderIdTemplate` governs
(documented). The company details and the contact person are our reading: each an object of
`requestDetails[0].additionalDetails[]` keyed by its name (`companyDetails`, `contactPerson`),
both in one object when this service lays them out; read from whichever object holds them.

The check's layout (app/catalog/schema.py `MEMBERS`, what the console's form builds) is taken as a
convenience: `companyDetails`, `contactPerson`, `senderIds` at the top level beside Sinch's
fields, and optionally `attachments` (the uploads to come, never sent).

- `read(body)` tells which layout a caller's body is in and answers both views of it: the
  members the check reads, and the body Sinch gets (Sinch's layout as sent; the check's laid out
  by `to_sinch`). A body in neither (no content at all) is read as Sinch's, THE layout. A body
  mixing both is refused with one entry (`Read.mixed`).
- `Read.path_sent(path)` turns a check error's path (`$.companyDetails.companyName`) into the
  same field's path in the body the caller sent
  (`$.requestDetails[0].additionalDetails[0].companyDetails.companyName`); `moved(where, path)`
  does the same for any body read by `from_sinch` (a registration's document, for
  `needsAction`).
- `to_sinch(members)` lays the check's members out as Sinch's body; `from_sinch(body)` reads
  Sinch's body as the check's members. `from_sinch(to_sinch(m))` gives `m` back (`attachments`
  aside, `senderIds` a list).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from app.catalog.check import FieldError

COMPANY: Final = "companyDetails"
CONTACT: Final = "contactPerson"
SENDERS: Final = "senderIds"
CHECK_MEMBERS: Final = (COMPANY, CONTACT, SENDERS)
"""The check's members a Sinch-layout body holds under `requestDetails` (app/catalog/schema.py
`MEMBERS`)."""
LISTED_ATTACHMENTS: Final = "attachments"
"""The uploads a check-layout request will make: checked, never sent (Sinch takes them through
their own upload). In a Sinch-layout body, `attachments` is Sinch's and passed on as sent."""
DETAILS: Final = "requestDetails"
SENDER_DETAILS: Final = "senderIdDetails"
ADDITIONAL: Final = "additionalDetails"
ADDITIONAL_MEMBERS: Final = (COMPANY, CONTACT)
"""The check's members kept in `requestDetails[0].additionalDetails[]`, each in an object keyed
by its name (our reading of Sinch's layout: module docstring)."""
FIRST: Final = f"$.{DETAILS}[0]"
"""Where the content sits in a Sinch-layout body: the check reads the first entry only."""
LAYOUT_RULE: Final = "layout"
"""The rule of an entry about the body's layout itself (mixed, a member given twice)."""


class Layout(StrEnum):
    SINCH = "sinch"
    """Sinch's create or update body (`requestDetails`): THE layout."""
    CHECK = "check"
    """The check's members at the top level: a convenience, laid out as Sinch's before sending."""


@dataclass(frozen=True, slots=True)
class FromSinch:
    """A Sinch-layout body read for the check."""

    members: dict[str, Any]
    """The check's view: the body's top-level fields but `requestDetails`, and the check's
    members found there."""
    where: dict[str, str]
    """Each check member's path (`$.senderIds`) -> the path it sits at in the body."""
    errors: list[FieldError]
    """What the check cannot read as Sinch's layout, at paths into the body."""


@dataclass(frozen=True, slots=True)
class Read:
    """A caller's body read: its layout, what the check reads, what Sinch gets."""

    layout: Layout
    members: dict[str, Any]
    """What the check reads (app/catalog/check.py)."""
    sinch: dict[str, Any]
    """The body Sinch gets (before this service's `callbackUrl`)."""
    errors: list[FieldError] = field(default_factory=list)
    """The layout's own errors, at paths into the body as sent."""
    mixed: bool = False
    """The body mixes both layouts: `errors` is its one entry, and the check's say nothing."""
    where: dict[str, str] = field(default_factory=dict)
    """A check member's path -> its path in the body as sent; identity when absent."""

    def path_sent(self, path: str) -> str:
        """`path` (a JSON path into the check's members, app/catalog/check.json_path) as the
        same field's path in the body the caller sent."""
        return moved(self.where, path)


def moved(where: Mapping[str, str], path: str) -> str:
    """`path` (a JSON path into the check's members) as the same field's path in a body laid out
    as `where` says (`FromSinch.where`, `Read.where`). Paths outside the moved members
    (`$.policyId`, `$.attachments[0]`) are the same in both layouts."""
    for checked, sent in where.items():
        rest = path.removeprefix(checked)
        if rest != path and (not rest or rest[0] in ".["):
            return sent + rest
    return path


def to_sinch(members: Mapping[str, Any]) -> dict[str, Any]:
    """The check's members as Sinch's create or update body: `senderIds` become
    `requestDetails[0].senderIdDetails`, `companyDetails` and `contactPerson` one object of
    `requestDetails[0].additionalDetails` keyed by those names; `attachments` is left out;
    every other member is passed on as it is."""
    laid_out = {*CHECK_MEMBERS, LISTED_ATTACHMENTS}
    document = {name: value for name, value in members.items() if name not in laid_out}
    additional = {name: members[name] for name in ADDITIONAL_MEMBERS if name in members}
    senders = members.get(SENDERS)
    document[DETAILS] = [
        {
            SENDER_DETAILS: list(senders) if isinstance(senders, list) else [],
            ADDITIONAL: [additional] if additional else [],
        }
    ]
    return document


def from_sinch(body: Mapping[str, Any]) -> FromSinch:
    """Sinch's body read as the check's members (module docstring). Lenient: what is not of
    Sinch's shape is an error entry and is read as absent (the check then names what is
    missing); objects of `additionalDetails` keyed otherwise are not the check's and pass as
    sent. A member missing from `additionalDetails` is pointed at the object holding the other
    one, else at the first: where `to_sinch` would put it."""
    members = {name: value for name, value in body.items() if name != DETAILS}
    errors: list[FieldError] = []
    details = body.get(DETAILS, [])
    if not isinstance(details, list):
        errors.append(FieldError(f"$.{DETAILS}", "type", "Must be an array of one object."))
        details = []
    elif len(details) > 1:
        errors.append(
            FieldError(
                f"$.{DETAILS}[1]",
                "maxItems",
                f"One entry: every sender ID goes in {DETAILS}[0].{SENDER_DETAILS}, the company "
                f"details and the contact person in {DETAILS}[0].{ADDITIONAL}.",
            )
        )
    first = details[0] if details else {}
    if not isinstance(first, dict):
        errors.append(FieldError(FIRST, "type", "Must be of type object."))
        first = {}
    if SENDER_DETAILS in first:
        members[SENDERS] = first[SENDER_DETAILS]
    additional = first.get(ADDITIONAL, [])
    if not isinstance(additional, list):
        errors.append(FieldError(f"{FIRST}.{ADDITIONAL}", "type", "Must be of type array."))
        additional = []
    held: dict[str, int] = {}
    for index, item in enumerate(additional):
        for name in ADDITIONAL_MEMBERS:
            if not isinstance(item, dict) or name not in item:
                continue
            if name in held:
                errors.append(
                    FieldError(
                        f"{FIRST}.{ADDITIONAL}[{index}].{name}",
                        LAYOUT_RULE,
                        f"`{name}` is given once, in {ADDITIONAL}[{held[name]}].",
                    )
                )
                continue
            held[name] = index
            members[name] = item[name]
    fallback = min(held.values(), default=0)
    where = {f"$.{SENDERS}": f"{FIRST}.{SENDER_DETAILS}"} | {
        f"$.{name}": f"{FIRST}.{ADDITIONAL}[{held.get(name, fallback)}].{name}"
        for name in ADDITIONAL_MEMBERS
    }
    return FromSinch(members, where, errors)


def read(body: Mapping[str, Any]) -> Read:
    """A caller's body read (module docstring): Sinch's layout when it has `requestDetails` or
    none of the check's members, the check's when it has those and no `requestDetails`; both is
    `mixed`, refused with one entry at `$.requestDetails`."""
    given = [name for name in CHECK_MEMBERS if name in body]
    if DETAILS in body and given:
        names = ", ".join(f"`{name}`" for name in given)
        refusal = FieldError(
            f"$.{DETAILS}",
            LAYOUT_RULE,
            f"Send the registration in one layout: Sinch's (`{DETAILS}`) or the check's "
            f"(`{COMPANY}`, `{CONTACT}`, `{SENDERS}` at the top level); this body has "
            f"`{DETAILS}` and {names}.",
        )
        return Read(Layout.SINCH, dict(body), dict(body), [refusal], mixed=True)
    if given:
        return Read(Layout.CHECK, dict(body), to_sinch(body))
    found = from_sinch(body)
    return Read(Layout.SINCH, found.members, dict(body), found.errors, where=found.where)
