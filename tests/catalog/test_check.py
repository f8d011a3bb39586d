"""The check of a registration request against its policy, and the conversion it rests on (Sinch's
field lists to JSON Schema): pure functions, no services."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from app.catalog.check import check, json_path
from app.catalog.diff import diff
from app.catalog.schema import request_schema
from devtools.simulator.catalog import POLICY_DOCUMENTS


def policy(
    *sender_fields: dict[str, Any],
    company: list[dict[str, Any]] | None = None,
    multi: bool = False,
    **top: Any,
) -> dict[str, Any]:
    return {
        "id": "p1",
        "policyStatus": "ENABLED",
        "policyMultiType": "MULTI_SENDER" if multi else "SINGLE",
        "price": {"mode": "AUTOMATIC", "subscription": {"currency": "EUR"}},
        "jsonPolicy": {
            "companyDetailsTemplate": {"properties": company or []},
            "contactPersonTemplate": {"properties": []},
            "senderIdTemplate": {"properties": list(sender_fields)},
        },
        "attachments": [],
        **top,
    }


def field(name: str, **rules: Any) -> dict[str, Any]:
    return {"name": name, "title": name, "type": "string", "required": False, **rules}


def errors(document: dict[str, Any], body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e.path, e.rule, e.message) for e in check(document, body).errors]


# --- the conversion ------------------------------------------------------------------------------


def test_every_simulator_policy_converts_to_a_valid_json_schema() -> None:
    for document in POLICY_DOCUMENTS.values():
        converted = request_schema(dict(document))
        Draft202012Validator.check_schema(converted.schema)
        assert converted.unchecked == []


def test_the_conversion_of_one_template() -> None:
    document = policy(
        field("senderId", required=True, minLength=3, maxLength=11, pattern="^[A-Z]+$"),
        field("useCase", required=True, enum=["OTP", "OTHER"]),
        field("why", **{"x-requiredIf": {"name": "useCase", "enum": ["OTHER"]}}),
        field("volume", type="integer", minimum=1),
        field("since", type="date"),
        message={"ignored": "top-level members are not fields"},
    )
    document["jsonPolicy"]["senderIdTemplate"]["properties"][0]["message"] = {"pattern": "Caps"}

    schema = request_schema(document).schema

    assert schema["required"] == ["senderIds"]  # the empty templates ask for nothing
    senders = schema["properties"]["senderIds"]
    assert (senders["type"], senders["minItems"], senders["maxItems"]) == ("array", 1, 1)
    item = senders["items"]
    assert item["required"] == ["senderId", "useCase"]
    assert item["additionalProperties"] is False
    assert item["properties"]["senderId"] == {
        "type": "string",
        "minLength": 3,
        "maxLength": 11,
        "pattern": "^[A-Z]+$",
        "title": "senderId",
        "x-messages": {"pattern": "Caps"},
    }
    assert item["properties"]["since"]["format"] == "date"
    assert item["properties"]["volume"] == {"type": "integer", "minimum": 1, "title": "volume"}
    assert item["allOf"] == [
        {
            "if": {"properties": {"useCase": {"enum": ["OTHER"]}}, "required": ["useCase"]},
            "then": {"required": ["why"]},
        }
    ]
    assert (
        request_schema(policy(field("s"), multi=True)).schema["properties"]["senderIds"]["maxItems"]
        == 50
    )


def test_a_pattern_python_cannot_read_is_reported_not_applied() -> None:
    converted = request_schema(policy(field("senderId", pattern="[a-")))

    assert converted.unchecked == ["senderIdTemplate.senderId.pattern"]
    assert (
        "pattern"
        not in converted.schema["properties"]["senderIds"]["items"]["properties"]["senderId"]
    )


def test_odd_field_lists_are_skipped_not_fatal() -> None:
    document = policy()
    document["jsonPolicy"]["senderIdTemplate"] = {"properties": [1, {"title": "no name"}, None]}
    document["jsonPolicy"]["companyDetailsTemplate"] = "not an object"

    assert check(document, {}).errors == []


# --- the check --------------------------------------------------------------------------------


def test_a_valid_request_answers_the_price_and_the_attachments_to_upload() -> None:
    de = dict(POLICY_DOCUMENTS["sim-policy-de-alphanumeric"])
    body = {
        "policyId": "sim-policy-de-alphanumeric",
        "companyDetails": {"companyName": "Acme GmbH", "vatNumber": "DE123456789"},
        "contactPerson": {
            "firstName": "Ada",
            "lastName": "L",
            "email": "ada@example.com",
            "phoneNumber": "+49301234567",
        },
        "senderIds": [{"senderId": "ACME", "useCase": "OTP"}],
    }

    result = check(de, body, registration_type="ALPHANUMERIC_SENDER_ID")

    assert result.valid and result.errors == []
    assert result.price == de["price"]
    assert [(a.attachment_id, a.mandatory, a.listed) for a in result.attachments] == [
        ("trade-register-extract", True, False),
        ("letter-of-authorisation", False, False),
    ]


def test_each_field_in_error_has_one_entry_with_sinchs_message_where_it_has_one() -> None:
    us = dict(POLICY_DOCUMENTS["sim-policy-us-longnumber"])
    body = {
        "companyDetails": {"companyName": "Acme", "ein": "12345", "companyType": "PUBLIC"},
        "contactPerson": {"firstName": "A", "lastName": "B", "email": "nope", "phoneNumber": "0"},
        "senderIds": [{"senderId": "0044 20", "monthlyVolume": "lots", "colour": "red"}],
    }

    assert errors(us, body) == [
        ("$.companyDetails.ein", "pattern", "An EIN is written NN-NNNNNNN"),
        ("$.companyDetails.stockSymbol", "required", "This field is required."),
        (
            "$.contactPerson.email",
            "pattern",
            "Enter a valid email address, for example name@example.com",
        ),
        (
            "$.contactPerson.phoneNumber",
            "pattern",
            "The number needs to start with country code. For example +1",
        ),
        ("$.senderIds[0].colour", "additionalProperties", "This field is not one of the policy's."),
        ("$.senderIds[0].monthlyVolume", "type", "Must be of type integer."),
        (
            "$.senderIds[0].senderId",
            "pattern",
            "The number needs to start with country code. For example +1",
        ),
    ]
    # No message quotes what was sent.
    assert not any("0044" in message or "lots" in message for _, _, message in errors(us, body))


def test_a_conditional_field_is_required_only_under_its_condition() -> None:
    document = policy(
        field("useCase", required=True, enum=["OTP", "OTHER"]),
        field("why", **{"x-requiredIf": {"name": "useCase", "enum": ["OTHER"]}}),
    )

    assert errors(document, {"senderIds": [{"useCase": "OTP"}]}) == []
    assert errors(document, {"senderIds": [{"useCase": "OTHER"}]}) == [
        ("$.senderIds[0].why", "required", "This field is required.")
    ]
    assert errors(document, {"senderIds": [{"useCase": "OTHER", "why": "because"}]}) == []


def test_a_field_breaking_several_rules_gets_the_first_of_them() -> None:
    document = policy(field("s", minLength=5, pattern="^[0-9]+$", message={"minLength": "Short"}))

    assert errors(document, {"senderIds": [{"s": "ab"}]}) == [
        ("$.senderIds[0].s", "minLength", "Short")
    ]


def test_sender_ids_are_counted_by_the_policys_multi_type() -> None:
    single = policy(field("senderId", required=True))
    multi = policy(field("senderId", required=True), multi=True)
    two = {"senderIds": [{"senderId": "A"}, {"senderId": "B"}]}

    assert errors(single, two) == [("$.senderIds", "maxItems", "At most 1 allowed.")]
    assert errors(multi, two) == []
    assert errors(multi, {"senderIds": []}) == [("$.senderIds", "minItems", "At least 1 needed.")]
    assert errors(multi, {}) == [("$.senderIds", "required", "This field is required.")]


def test_a_disabled_policy_answers_sinchs_disclaimer() -> None:
    fr = dict(POLICY_DOCUMENTS["sim-policy-fr-alphanumeric"])

    result = check(fr, {})

    first = result.errors[0]
    assert (first.path, first.rule, first.from_sinch) == ("$.policyId", "policyStatus", True)
    assert first.message == fr["statusDisclaimer"]
    assert result.price == fr["price"]
    without_text = check(policy(policyStatus="DISABLED"), {"senderIds": []})
    assert without_text.errors[0].message.startswith("Sinch has disabled this policy")


def test_a_registration_type_other_than_the_policys_is_refused() -> None:
    result = check(policy(), {"registrationType": "SHORT_CODE"}, registration_type="LONG_NUMBER")

    assert [(e.path, e.rule) for e in result.errors] == [("$.registrationType", "const")]


def test_listed_attachments_are_checked_against_the_policy() -> None:
    de = dict(POLICY_DOCUMENTS["sim-policy-de-alphanumeric"])

    def attachment_errors(listed: Any) -> list[tuple[str, str]]:
        return [
            (e.path, e.rule)
            for e in check(de, {"attachments": listed}).errors
            if e.path.startswith("$.attachments")
        ]

    assert attachment_errors([{"attachmentId": "trade-register-extract"}]) == []
    assert attachment_errors([]) == [("$.attachments", "required")]
    assert attachment_errors(
        [
            {"attachmentId": "trade-register-extract", "mimeType": "application/zip"},
            {"attachmentId": "nope"},
        ]
    ) == [("$.attachments[0].mimeType", "enum"), ("$.attachments[1].attachmentId", "enum")]
    assert attachment_errors("x") == [("$.attachments", "type")]


def test_json_paths() -> None:
    assert json_path([]) == "$"
    assert json_path(["senderIds", 0, "senderId"]) == "$.senderIds[0].senderId"
    assert json_path(["a b", "it's"]) == "$['a b']['it\\'s']"


# --- properties ---------------------------------------------------------------------------------

TEXT = st.text(alphabet=string.ascii_letters + string.digits + " ", max_size=20)


@given(
    value=TEXT,
    low=st.integers(min_value=0, max_value=10),
    span=st.integers(min_value=0, max_value=10),
)
def test_lengths_are_checked_exactly_with_sinchs_messages(value: str, low: int, span: int) -> None:
    high = low + span
    document = policy(
        field("s", minLength=low, maxLength=high, message={"minLength": "few", "maxLength": "many"})
    )

    found = errors(document, {"senderIds": [{"s": value}]})

    if len(value) < low:
        assert found == [("$.senderIds[0].s", "minLength", "few")]
    elif len(value) > high:
        assert found == [("$.senderIds[0].s", "maxLength", "many")]
    else:
        assert found == []


NAMES = st.lists(
    st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6),
    unique=True,
    min_size=1,
    max_size=6,
)


@given(names=NAMES, data=st.data())
def test_exactly_the_required_fields_left_out_are_reported(names: list[str], data: Any) -> None:
    required = {n for n in names if data.draw(st.booleans(), label=f"{n} required")}
    present = {n for n in names if data.draw(st.booleans(), label=f"{n} present")}
    extra = data.draw(st.sets(st.sampled_from(["zz1", "zz2"])), label="unknown fields")
    document = policy(company=[field(n, required=n in required) for n in names])
    body = {"companyDetails": {n: "x" for n in present | extra}}

    found = errors(document, body)

    expected = [(f"$.companyDetails.{n}", "required") for n in required - present]
    expected += [(f"$.companyDetails.{n}", "additionalProperties") for n in extra]
    assert sorted((path, rule) for path, rule, _ in found) == sorted(expected)


@given(value=st.sampled_from(["OTP", "otp", "MARKETING", "", "OTHER "]))
def test_enums_are_exact(value: str) -> None:
    document = policy(field("u", enum=["OTP", "MARKETING"]))

    found = errors(document, {"senderIds": [{"u": value}]})

    assert found == (
        []
        if value in ("OTP", "MARKETING")
        else [("$.senderIds[0].u", "enum", "Must be one of: OTP, MARKETING.")]
    )


# --- what changed in a policy ------------------------------------------------------------------


def test_the_diff_names_fields_added_changed_and_removed() -> None:
    before = dict(POLICY_DOCUMENTS["sim-policy-gb-alphanumeric"])
    after = {
        **before,
        "id": "another-version-id",
        "policyStatus": "DISABLED",
        "jsonPolicy": {
            **before["jsonPolicy"],
            "companyDetailsTemplate": {
                "properties": [
                    p if p["name"] != "companyNumber" else {**p, "pattern": "^[0-9]{8}$"}
                    for p in before["jsonPolicy"]["companyDetailsTemplate"]["properties"]
                    if p["name"] != "website"
                ]
                + [field("vatNumber", required=True)]
            },
        },
    }

    changed = diff(before, after)

    assert [c["field"] for c in changed["added"]] == ["companyDetailsTemplate.vatNumber"]
    assert [c["field"] for c in changed["changed"]] == [
        "companyDetailsTemplate.companyNumber",
        "policyStatus",
    ]
    assert changed["changed"][1]["before"] == "ENABLED"
    assert changed["changed"][1]["after"] == "DISABLED"
    assert [c["field"] for c in changed["removed"]] == ["companyDetailsTemplate.website"]
    assert diff(before, {**before, "id": "v2"}) == {"added": [], "changed": [], "removed": []}
