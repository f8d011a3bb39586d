"""The console's registration form generated from a policy (app/console/registration_form.py,
pure): what a posted form becomes as the request the policy check takes, and the inputs a
registration's document fills in."""

from __future__ import annotations

from app.catalog import layout
from app.catalog.check import FieldError, check
from app.console import registration_form as forms
from devtools.simulator.catalog import POLICY_DOCUMENTS

GB = POLICY_DOCUMENTS["sim-policy-gb-alphanumeric"]
SE = POLICY_DOCUMENTS["sim-policy-se-alphanumeric-multi"]


def test_a_posted_form_is_the_request_the_check_takes_without_its_blank_inputs() -> None:
    posted = {
        "$.companyDetails.companyName": " Acme Ltd ",
        "$.companyDetails.website": "",
        "$.senderIds[0].senderId": "ACME",
        "$.senderIds[0].useCase": "OTP",
        "tags": "#a, , #b",
        "csrf": "not a field",
    }

    request = forms.request_of(
        GB, posted, policy_id="p", registration_type="ALPHANUMERIC_SENDER_ID"
    )

    assert request == {
        "policyId": "p",
        "registrationType": "ALPHANUMERIC_SENDER_ID",
        "companyDetails": {"companyName": "Acme Ltd"},
        "contactPerson": {},
        "senderIds": [{"senderId": "ACME", "useCase": "OTP"}],
        "tags": ["#a", "#b"],
    }
    # Every error the check finds is at an input of the form, or listed above it.
    form = forms.sections(GB, posted, {})
    beside, above = forms.errors_by_path(check(GB, request).errors, form)
    assert "$.companyDetails.companyNumber" in beside
    assert "$.contactPerson.email" in beside
    assert above == []


def test_a_multi_sender_form_offers_blank_rows_and_leaves_them_out() -> None:
    posted = {"$.senderIds[1].senderId": "SECOND"}

    [senders] = [s for s in forms.sections(SE, posted, {}) if s.member == "senderIds"]
    request = forms.request_of(SE, posted, policy_id="p", registration_type=None)

    assert len(senders.rows) == 2 + forms.MULTI_SENDER_ROWS
    assert request["senderIds"] == [{"senderId": "SECOND"}]
    assert forms.request_of(SE, {}, policy_id="p", registration_type=None)["senderIds"] == [{}]


def test_errors_no_input_shows_are_listed_above() -> None:
    form = forms.sections(GB, {}, {})
    disabled = FieldError("$.policyId", "policyStatus", "Disabled.")

    beside, above = forms.errors_by_path([disabled], form)

    assert (beside, above) == ({}, [disabled])


def test_a_document_fills_the_inputs_and_a_request_becomes_sinchs_body() -> None:
    request = {
        "policyId": "p",
        "companyDetails": {"companyName": "Acme"},
        "senderIds": [{"senderId": "ACME", "useCase": "OTP"}],
        "tags": ["#a"],
    }

    body = layout.to_sinch(request)
    values = forms.values_of(body)

    assert body["requestDetails"] == [
        {
            "senderIdDetails": [{"senderId": "ACME", "useCase": "OTP"}],
            "additionalDetails": [{"companyDetails": {"companyName": "Acme"}}],
        }
    ]
    assert "senderIds" not in body and "companyDetails" not in body
    assert values == {
        "$.senderIds[0].senderId": "ACME",
        "$.senderIds[0].useCase": "OTP",
        "$.companyDetails.companyName": "Acme",
        "tags": "#a",
    }
    assert (
        forms.request_of(GB, values, policy_id="p", registration_type=None)["senderIds"]
        == (request["senderIds"])
    )
