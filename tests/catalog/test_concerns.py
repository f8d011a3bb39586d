"""What `needsAction` names (app/catalog/concerns.py): the fields and attachments Sinch's message
names as whole words, and the mandatory attachments not uploaded; never a guess."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog.concerns import missing_attachments, named_attachments, named_fields
from devtools.simulator.catalog import POLICY_DOCUMENTS

GB = dict(POLICY_DOCUMENTS["sim-policy-gb-alphanumeric"])
DE = dict(POLICY_DOCUMENTS["sim-policy-de-alphanumeric"])
# Where the fields sit in a registration's document (Sinch's layout), or would sit once sent.
COMPANY = "$.requestDetails[0].additionalDetails[0].companyDetails"
CONTACT = "$.requestDetails[0].additionalDetails[0].contactPerson"
SENDERS = "$.requestDetails[0].senderIdDetails[*]"


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("Provide the website where customers see the brand", [f"{COMPANY}.website"]),
        (
            "Describe the use case of the sender ID in more detail",
            [f"{SENDERS}.senderId", f"{SENDERS}.useCase"],
        ),
        (
            "The EMAIL bounced; the phone number has no country code",
            [
                f"{CONTACT}.email",
                f"{CONTACT}.phoneNumber",
            ],
        ),
        (
            "The companyNumber does not match the company name",
            [
                f"{COMPANY}.companyName",
                f"{COMPANY}.companyNumber",
            ],
        ),
        # Not whole words, or no field's words at all: nothing named.
        ("Websites are checked later; the brand is too generic", []),
        ("", []),
    ],
)
def test_fields_are_named_only_by_their_title_or_name_as_whole_words(
    message: str, fields: list[str]
) -> None:
    assert named_fields(GB, message, None) == fields


def test_fields_are_named_where_the_registrations_document_holds_them() -> None:
    # The contact person in its own object of additionalDetails: its fields point there, so the
    # PUT that answers the message changes the right place.
    document: dict[str, Any] = {
        "requestDetails": [
            {
                "senderIdDetails": [{"senderId": "ACME"}],
                "additionalDetails": [
                    {"companyDetails": {"companyName": "Acme"}},
                    {"contactPerson": {"email": "a@example.com"}},
                ],
            }
        ]
    }
    assert named_fields(GB, "The email bounced; check the website", document) == [
        "$.requestDetails[0].additionalDetails[0].companyDetails.website",
        "$.requestDetails[0].additionalDetails[1].contactPerson.email",
    ]


def test_attachments_named_and_missing() -> None:
    assert named_attachments(DE, "Upload a letter of authorisation") == ["letter-of-authorisation"]
    assert named_attachments(DE, "Upload the company registration certificate") == []

    def document(*entries: tuple[str, str]) -> dict[str, Any]:
        return {"attachments": [{"attachmentId": a, "uploadStatus": s} for a, s in entries]}

    assert missing_attachments(DE, None) == ["trade-register-extract"]
    assert missing_attachments(DE, {"attachments": "odd"}) == ["trade-register-extract"]
    assert missing_attachments(DE, document(("letter-of-authorisation", "COMPLETED"))) == [
        "trade-register-extract"
    ]
    assert missing_attachments(DE, document(("trade-register-extract", "FAILED"))) == [
        "trade-register-extract"
    ]
    assert missing_attachments(DE, document(("trade-register-extract", "WAITING"))) == []
    assert missing_attachments(GB, None) == []  # its only attachment is optional
