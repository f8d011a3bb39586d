"""Lenient reading of callback bodies (docs/sinch.md's field names, in order)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.events.parsing import body_digest, dedup_key, parse_callback, read_claim


def test_sinch_shaped_body() -> None:
    fields = parse_callback(
        json.dumps(
            {
                "eventId": "01HX",
                "resourceId": "reg-1",
                "status": "APPROVED",
                "createTime": "2024-05-01T10:00:00",
            }
        ).encode()
    )
    assert fields.is_json_object
    assert fields.event_id == "01HX"
    assert fields.registration_id == "reg-1"
    assert fields.status == "APPROVED"
    assert fields.event_time == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_fallback_names_and_offsets() -> None:
    fields = parse_callback(
        b'{"registrationId": "reg-2", "registrationState": "PENDING",'
        b' "timestamp": "2024-05-01T12:00:00+02:00"}'
    )
    assert fields.registration_id == "reg-2"
    assert fields.status == "PENDING"
    assert fields.event_time == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert fields.event_id is None
    assert parse_callback(b'{"id": "reg-3", "eventTime": "2024-05-01T10:00:00Z"}').event_time


def test_unusable_bodies() -> None:
    assert not parse_callback(b"not json").is_json_object
    assert not parse_callback(b"[1, 2]").is_json_object
    assert not parse_callback(b"\xff\xfe").is_json_object
    fields = parse_callback(b'{"resourceId": 5, "status": "", "createTime": "yesterday"}')
    assert fields.registration_id == "5"
    assert fields.status is None
    assert fields.event_time is None


def test_dedup_key_is_the_event_id_else_a_body_hash() -> None:
    with_id = b'{"eventId": "e-1"}'
    assert dedup_key(parse_callback(with_id), with_id) == "e-1"
    without = b'{"resourceId": "r"}'
    assert dedup_key(parse_callback(without), without) == body_digest(without)
    assert body_digest(without) != body_digest(without + b" ")


@given(st.binary(max_size=2048))
def test_never_raises(body: bytes) -> None:
    parse_callback(body)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_never_raises_on_any_json(document: object) -> None:
    parse_callback(json.dumps(document).encode())


_CLAIMS = st.fixed_dictionaries(
    {},
    optional={
        key: st.none()
        | st.integers()
        | st.text(max_size=30)
        | st.sampled_from(
            [
                "APPROVED",
                " PENDING ",
                "2024-05-01T10:00:00",
                "2024-05-01T12:00:00+02:00",
                "9999-12-31T23:59:59-14:00",
            ]
        )
        for key in (
            "status",
            "registrationState",
            "createTime",
            "timestamp",
            "eventTime",
            "updateTime",
        )
    },
)


@given(st.binary(max_size=256) | _CLAIMS.map(lambda d: json.dumps(d).encode()))
def test_read_claim_reads_what_parse_callback_reads(body: bytes) -> None:
    # The events API shows `read_claim`; the worker decides on `parse_callback`: never apart.
    fields = parse_callback(body)
    assert read_claim(body) == (fields.status, fields.event_time)


def test_a_time_out_of_range_in_utc_is_no_time() -> None:
    # It used to raise OverflowError: the endpoint answered 500 and kept nothing.
    for text in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        body = json.dumps(
            {"eventId": "e-1", "resourceId": "reg-1", "status": "APPROVED", "createTime": text}
        ).encode()
        fields = parse_callback(body)
        assert fields.is_json_object
        assert (fields.event_id, fields.registration_id, fields.status) == (
            "e-1",
            "reg-1",
            "APPROVED",
        )
        assert fields.event_time is None


@pytest.mark.parametrize("dots", [".", "..", " .. "])
def test_a_registration_id_that_is_a_dot_segment_is_unusable(dots: str) -> None:
    # GET .../registrations/.. would fetch another resource: such an id cannot be checked.
    fields = parse_callback(json.dumps({"resourceId": dots, "id": "reg-1"}).encode())
    assert fields.registration_id == "reg-1"
    assert parse_callback(json.dumps({"resourceId": dots}).encode()).registration_id is None


def test_a_registration_id_holding_a_slash_is_unusable() -> None:
    """Servers decode %2F before routing: GET .../registrations/a%2Fb names another path."""
    for value in ("/", "a/b", "../x"):
        fields = parse_callback(json.dumps({"resourceId": value, "status": "APPROVED"}).encode())
        assert fields.registration_id is None, value
    assert parse_callback(b'{"resourceId": "a-b", "status": "APPROVED"}').registration_id == "a-b"
