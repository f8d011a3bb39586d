"""Reading the registration facts from Sinch documents: what can be read is, nothing else, and
no JSON value makes it raise (app/registrations/facts.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.db import is_storable_text
from app.registrations.facts import (
    MAX_MESSAGE,
    MAX_SENDER_IDS,
    DocumentFacts,
    Reason,
    callback_reason,
    fact_columns,
    read_facts,
)


def document(**fields: Any) -> dict[str, Any]:
    return {"id": "r-1", "status": "APPROVED", **fields}


def test_a_full_document_yields_every_fact() -> None:
    facts = read_facts(
        document(
            policyId="pol-se-multi",
            marketCode="SE",
            tags=["#billing", "#eu"],
            etaDate="2026-02-01",
            price={"currency": "EUR", "setupFeeAmount": "0.00"},
            requestDetails=[
                {
                    "additionalDetails": [],
                    "senderIdDetails": [
                        {"senderId": "ACME", "useCase": "OTP"},
                        {"senderId": "ACMEPAY", "useCase": "billing"},
                    ],
                },
                {"senderIdDetails": [{"senderId": "ACMEHELP"}]},
            ],
            logs=[
                {
                    "createTime": "2026-01-02T10:00:00",
                    "message": "Approved",
                    "registrationState": "APPROVED",
                },
                {
                    "createTime": "2026-01-01T10:00:00",
                    "message": "Submitted",
                    "registrationState": "IN_QUEUE",
                },
            ],
        )
    )
    assert facts == DocumentFacts(
        sender_ids=("ACME", "ACMEPAY", "ACMEHELP"),
        market_code="SE",
        policy_id="pol-se-multi",
        tags=("#billing", "#eu"),
        eta_date=date(2026, 2, 1),
        price={"currency": "EUR", "setupFeeAmount": "0.00"},
        reason=Reason(
            message="Approved", state="APPROVED", at=datetime(2026, 1, 2, 10, tzinfo=UTC)
        ),
    )


def test_the_newest_log_is_chosen_by_time_whatever_the_order() -> None:
    logs = [
        {
            "createTime": "2026-01-03T10:00:00",
            "message": "Upload the letter",
            "registrationState": "PENDING",
        },
        {"createTime": "2026-01-01T10:00:00", "message": "Submitted"},
        {"message": "no time at all"},
        {"createTime": "2026-01-02T10:00:00", "message": "In review"},
        {"createTime": "2026-01-04T10:00:00"},  # no message: not a reason
        {"createTime": "2026-01-05T10:00:00", "message": "   "},
    ]
    reason = read_facts(document(logs=logs)).reason
    assert reason == Reason("Upload the letter", "PENDING", datetime(2026, 1, 3, 10, tzinfo=UTC))
    # Without any timed entry, the last one in the list is the newest.
    untimed = [{"message": "first"}, {"message": "second", "createTime": "garbage"}]
    assert read_facts(document(logs=untimed)).reason == Reason("second", None, None)


def test_odd_shapes_yield_what_can_be_read() -> None:
    facts = read_facts(
        document(
            requestDetails={"senderIdDetails": {"senderId": "SOLO"}},  # objects, not lists
            tags="#not-a-list",
            etaDate="2026-02-01T12:00:00",
            price="12 EUR",
            policyId=42,
            marketCode=["GB"],
            logs={"message": "a single object", "createTime": "2026-01-01T00:00:00"},
        )
    )
    assert facts.sender_ids == ("SOLO",)
    assert facts.tags == ()
    assert facts.eta_date == date(2026, 2, 1)
    assert facts.price is None
    assert facts.policy_id == "42"
    assert facts.market_code is None
    assert facts.reason is not None and facts.reason.message == "a single object"

    bad = read_facts(
        document(
            requestDetails=[None, 3, {"senderIdDetails": [None, {"senderId": None}, {"x": 1}]}],
            logs=[None, "text", {"message": 5}],
            etaDate="soon",
        )
    )
    assert bad == DocumentFacts()


def test_sixty_sender_ids_are_all_kept_in_order_and_duplicates_once() -> None:
    senders = [{"senderId": f"ACME{n:02d}"} for n in range(60)] + [{"senderId": "ACME00"}]
    facts = read_facts(document(requestDetails=[{"senderIdDetails": senders}]))
    assert facts.sender_ids == tuple(f"ACME{n:02d}" for n in range(60))
    many = [{"senderId": f"S{n}"} for n in range(MAX_SENDER_IDS + 50)]
    assert len(read_facts(document(requestDetails=[{"senderIdDetails": many}])).sender_ids) == (
        MAX_SENDER_IDS
    )


def test_text_no_database_can_store_is_left_out_and_long_messages_are_kept() -> None:
    facts = read_facts(
        document(
            requestDetails=[
                {
                    "senderIdDetails": [
                        {"senderId": "AC\x00ME"},
                        {"senderId": "\ud800"},
                        {"senderId": "OK"},
                    ]
                }
            ],
            tags=["#ok", "#n\x00l", "x" * 300],
            policyId="p\x00",
            logs=[{"createTime": "2026-01-01T00:00:00", "message": "m" * 10_000}],
        )
    )
    assert facts.sender_ids == ("OK",)
    assert facts.tags == ("#ok",)
    assert facts.policy_id is None
    assert facts.reason is not None and facts.reason.message == "m" * 10_000
    huge = read_facts(document(logs=[{"message": "m" * (MAX_MESSAGE + 10)}])).reason
    assert huge is not None and len(huge.message) == MAX_MESSAGE


def test_a_callback_gives_its_comments_as_the_reason() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert callback_reason("Brand not verified", "REJECTED", at) == Reason(
        "Brand not verified", "REJECTED", at
    )
    assert callback_reason(None, "REJECTED", at) is None
    assert callback_reason({"text": "x"}, "REJECTED", at) is None


def test_a_document_without_a_reason_keeps_the_one_known() -> None:
    columns = fact_columns(read_facts(document()), None)
    assert "reason_message" not in columns
    assert columns["sender_ids"] == [] and columns["tags"] == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "requestDetails",
                    "senderIdDetails",
                    "senderId",
                    "logs",
                    "message",
                    "createTime",
                    "registrationState",
                    "tags",
                    "etaDate",
                    "price",
                    "policyId",
                    "marketCode",
                    "x",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_read_without_raising_and_yields_storable_text(value: object) -> None:
    facts = read_facts(value)
    texts = [*facts.sender_ids, *facts.tags, facts.policy_id or "", facts.market_code or ""]
    if facts.reason is not None:
        texts += [facts.reason.message, facts.reason.state or ""]
    assert all(is_storable_text(text) for text in texts)
    assert all(len(text) <= MAX_MESSAGE for text in texts)
    assert len(set(facts.sender_ids)) == len(facts.sender_ids)
