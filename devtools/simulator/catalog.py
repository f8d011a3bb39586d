"""The simulator's market requirements: each policy as Sinch documents it (`GET
/policies/{policyId}`), the markets' availability (`GET /markets/availability`), and `SimCatalog`,
one simulated project's copy of them that the control API may change (a policy Sinch revised).

The documents follow docs/sinch.md: `jsonPolicy` holds three templates whose `properties` is an
array of field rules (`required`, `minLength`, `maxLength`, `pattern`, `enum`, with Sinch's own
error text per rule in `message`), `attachments` the documents to upload (some `mandatory`),
`price` a `mode` and a `subscription`. How Sinch states a field required only when another field
has some value is not documented: the simulator writes it `x-requiredIf: {"name", "enum"}` (the
field is required when field `name` is one of `enum`), an assumption kept explicit in
docs/sinch.md and read in one place by the service (app/catalog/schema.py).

Which market and registration type each policy serves, and which registrations get it, is
`devtools.simulator.state.POLICIES`; this module holds what a policy asks for.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

MARKET_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "AU": "Australia",
        "DE": "Germany",
        "FR": "France",
        "GB": "United Kingdom",
        "SE": "Sweden",
        "US": "United States",
    }
)

_PHONE: dict[str, Any] = {
    "pattern": "^[+][0-9]+$",
    "message": {"pattern": "The number needs to start with country code. For example +1"},
}
_EMAIL: dict[str, Any] = {
    "pattern": "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$",
    "message": {"pattern": "Enter a valid email address, for example name@example.com"},
}


def _field(
    name: str,
    title: str,
    *,
    required: bool = False,
    required_if: tuple[str, list[str]] | None = None,
    **rules: Any,
) -> dict[str, Any]:
    """One item of a template's `properties`, shaped as Sinch sends it; `required_if` (another
    field's name, and its values that make this one required) becomes `x-requiredIf`."""
    item: dict[str, Any] = {
        "name": name,
        "title": title,
        "type": rules.pop("type", "string"),
        "description": rules.pop("description", title),
        "required": required,
    }
    item.update(rules)
    if required_if is not None:
        item["x-requiredIf"] = {"name": required_if[0], "enum": required_if[1]}
    return item


def _template(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"properties": list(fields)}


def _contact_person() -> dict[str, Any]:
    return _template(
        _field("firstName", "First name", required=True, maxLength=50),
        _field("lastName", "Last name", required=True, maxLength=50),
        _field("email", "Email", required=True, **_EMAIL),
        _field("phoneNumber", "Phone number", required=True, **_PHONE, examples=["+4420123456"]),
    )


def _alphanumeric_sender(*extra: dict[str, Any]) -> dict[str, Any]:
    return _template(
        _field(
            "senderId",
            "Sender ID",
            required=True,
            minLength=3,
            maxLength=11,
            pattern="^[A-Za-z0-9 ._-]*[A-Za-z][A-Za-z0-9 ._-]*$",
            message={
                "pattern": "Use letters, digits, spaces, dots, dashes or underscores, with at "
                "least one letter",
                "minLength": "The sender ID needs at least 3 characters",
                "maxLength": "The sender ID can have at most 11 characters",
            },
            examples=["ACME"],
        ),
        _field(
            "useCase",
            "Use case",
            required=True,
            enum=["OTP", "TRANSACTIONAL", "MARKETING", "OTHER"],
        ),
        _field(
            "useCaseDescription",
            "Use case description",
            minLength=20,
            maxLength=500,
            message={"minLength": "Describe the use case in at least 20 characters"},
            required_if=("useCase", ["OTHER"]),
        ),
        *extra,
    )


def _subscription(currency: str, recurrent: str, setup: str) -> dict[str, Any]:
    return {
        "mode": "AUTOMATIC",
        "subscription": {
            "currency": currency,
            "frequency": "MONTHLY",
            "recurrentFeeAmount": recurrent,
            "setupFeeAmount": setup,
        },
    }


def _attachment(
    attachment_id: str, title: str, *, mandatory: bool, types: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "id": attachment_id,
        "title": title,
        "description": title,
        "mandatory": mandatory,
        "template": None,
        "allowedMimeTypes": list(types),
        "allowedDocumentTypes": [t.rpartition("/")[2].upper() for t in types],
    }


_PDF_OR_IMAGE = ("application/pdf", "image/png", "image/jpeg")


def _policy(
    policy_id: str,
    *,
    multi: bool = False,
    status: str = "ENABLED",
    disclaimer: str | None = None,
    price: dict[str, Any],
    company: dict[str, Any],
    sender: dict[str, Any],
    attachments: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    return {
        "id": policy_id,
        "policyStatus": status,
        "statusDisclaimer": disclaimer,
        "policyMultiType": "MULTI_SENDER" if multi else "SINGLE",
        "price": price,
        "jsonPolicy": {
            "companyDetailsTemplate": company,
            "contactPersonTemplate": _contact_person(),
            "senderIdTemplate": sender,
        },
        "attachments": list(attachments),
    }


_COMPANY_NAME = _field("companyName", "Company name", required=True, minLength=2, maxLength=100)
_WEBSITE = _field(
    "website",
    "Website",
    pattern="^https://",
    message={"pattern": "The website must start with https://"},
)

POLICY_DOCUMENTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        document["id"]: MappingProxyType(document)
        for document in (
            _policy(
                "sim-policy-gb-alphanumeric",
                price=_subscription("EUR", "10.00", "0.00"),
                company=_template(
                    _COMPANY_NAME,
                    _field(
                        "companyNumber",
                        "Companies House number",
                        required=True,
                        pattern="^[0-9A-Z]{8}$",
                        message={"pattern": "A Companies House number has 8 letters or digits"},
                    ),
                    _WEBSITE,
                ),
                sender=_alphanumeric_sender(),
                attachments=(
                    _attachment(
                        "letter-of-authorisation",
                        "Letter of authorisation",
                        mandatory=False,
                        types=_PDF_OR_IMAGE,
                    ),
                ),
            ),
            _policy(
                "sim-policy-se-alphanumeric-multi",
                multi=True,
                price=_subscription("SEK", "95.00", "250.00"),
                company=_template(
                    _COMPANY_NAME,
                    _field(
                        "organisationNumber",
                        "Organisation number",
                        required=True,
                        pattern="^[0-9]{6}-[0-9]{4}$",
                        message={"pattern": "Write the organisation number as NNNNNN-NNNN"},
                    ),
                ),
                sender=_alphanumeric_sender(),
            ),
            _policy(
                "sim-policy-us-longnumber",
                price=_subscription("USD", "4.00", "15.00"),
                company=_template(
                    _COMPANY_NAME,
                    _field(
                        "ein",
                        "Employer Identification Number",
                        required=True,
                        pattern="^[0-9]{2}-[0-9]{7}$",
                        message={"pattern": "An EIN is written NN-NNNNNNN"},
                    ),
                    _field(
                        "companyType",
                        "Company type",
                        required=True,
                        enum=["PRIVATE", "PUBLIC", "NON_PROFIT", "GOVERNMENT"],
                    ),
                    _field(
                        "stockSymbol",
                        "Stock symbol",
                        maxLength=10,
                        required_if=("companyType", ["PUBLIC"]),
                    ),
                ),
                sender=_template(
                    _field("senderId", "Phone number", required=True, maxLength=16, **_PHONE),
                    _field(
                        "monthlyVolume",
                        "Messages a month",
                        type="integer",
                        required=True,
                        minimum=1,
                    ),
                ),
            ),
            _policy(
                "sim-policy-unlisted",
                price=_subscription("EUR", "12.50", "0.00"),
                company=_template(_COMPANY_NAME),
                sender=_template(_field("senderId", "Sender ID", required=True, maxLength=11)),
            ),
            _policy(
                "sim-policy-de-alphanumeric",
                price=_subscription("EUR", "15.00", "50.00"),
                company=_template(
                    _COMPANY_NAME,
                    _field(
                        "vatNumber",
                        "VAT number",
                        required=True,
                        pattern="^DE[0-9]{9}$",
                        message={"pattern": "A German VAT number is DE followed by 9 digits"},
                    ),
                    _WEBSITE,
                ),
                sender=_alphanumeric_sender(),
                attachments=(
                    _attachment(
                        "trade-register-extract",
                        "Extract from the trade register (Handelsregisterauszug)",
                        mandatory=True,
                        types=_PDF_OR_IMAGE,
                    ),
                    _attachment(
                        "letter-of-authorisation",
                        "Letter of authorisation",
                        mandatory=False,
                        types=("application/pdf",),
                    ),
                ),
            ),
            _policy(
                "sim-policy-fr-alphanumeric",
                status="DISABLED",
                disclaimer="Registrations of alphanumeric sender IDs in France are paused while "
                "the operators apply ARCEP's new rules; this policy will be replaced.",
                price=_subscription("EUR", "20.00", "100.00"),
                company=_template(
                    _COMPANY_NAME,
                    _field(
                        "siren",
                        "SIREN",
                        required=True,
                        pattern="^[0-9]{9}$",
                        message={"pattern": "A SIREN number has 9 digits"},
                    ),
                ),
                sender=_alphanumeric_sender(),
            ),
            _policy(
                "sim-policy-au-shortcode",
                price={"mode": "MANUAL"},
                company=_template(
                    _COMPANY_NAME,
                    _field(
                        "abn",
                        "Australian Business Number",
                        required=True,
                        pattern="^[0-9]{11}$",
                        message={"pattern": "An ABN has 11 digits"},
                    ),
                ),
                sender=_template(
                    _field(
                        "senderId",
                        "Short code",
                        required=True,
                        pattern="^[0-9]{4,6}$",
                        message={"pattern": "A short code has 4 to 6 digits"},
                    ),
                ),
                attachments=(
                    _attachment(
                        "message-samples",
                        "Samples of the messages to be sent",
                        mandatory=True,
                        types=("application/pdf",),
                    ),
                ),
            ),
        )
    }
)
"""Every policy the simulator serves, by id, as `GET /policies/{policyId}` answers it."""


class SimCatalog:
    """One simulated project's policies: the catalog's, or a document the control API put in
    their place (a policy Sinch revised) until `reset`."""

    def __init__(self) -> None:
        self._replaced: dict[str, dict[str, Any]] = {}

    def revised(self, policy_id: str) -> dict[str, Any] | None:
        """The document put in place of the catalog's for `policy_id`; None when there is none."""
        found = self._replaced.get(policy_id)
        return None if found is None else copy.deepcopy(found)

    def replace(self, policy_id: str, document: dict[str, Any]) -> None:
        """Serve `document` (its `id` forced to `policy_id`) for `policy_id` from now on."""
        self._replaced[policy_id] = copy.deepcopy(document) | {"id": policy_id}

    def reset(self) -> None:
        self._replaced.clear()


def availability(market_versions: list[Any], market_code: str | None) -> list[dict[str, str]]:
    """`GET /markets/availability`'s `markets`: each market with a market version among
    `market_versions` (those of one registration type), once, by market code."""
    codes = {
        v["marketCode"]
        for v in market_versions
        if isinstance(v, dict) and isinstance(v.get("marketCode"), str)
    }
    if market_code is not None:
        codes &= {market_code}
    return [
        {"marketCode": code, "marketName": MARKET_NAMES.get(code, code)} for code in sorted(codes)
    ]
