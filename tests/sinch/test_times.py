"""parse_sinch_time: every input is read as a UTC time or None, never an exception.

A time Sinch (or anyone signing a callback) sends goes through it on the callback path, the worker
and reconciliation; an exception there used to answer 500 and keep nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.sinch.schemas import SinchRegistration, parse_sinch_time

ONE_MICROSECOND = timedelta(microseconds=1)
SMALLEST = datetime.min.replace(tzinfo=UTC)
LARGEST = datetime.max.replace(tzinfo=UTC)
# Offsets datetime can hold (strictly within a day either way), in whole seconds: Python 3.11's
# fromisoformat drops an offset's fraction of a second, and no one writes one.
OFFSETS = st.integers(min_value=-86_399, max_value=86_399).map(lambda s: timedelta(seconds=s))


def as_iso(local: datetime, offset: timedelta) -> str:
    """`local` written with `offset`, as Sinch or a client would write it."""
    return local.replace(tzinfo=timezone(offset)).isoformat()


def instant_in_microseconds(local: datetime, offset: timedelta) -> int:
    """The instant `local` at `offset` names, as microseconds after datetime.min in UTC; computed
    with integers so that it exists even where datetime cannot hold it."""
    return (local - datetime.min) // ONE_MICROSECOND - offset // ONE_MICROSECOND


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59-14:00",  # past the largest datetime once in UTC
        "9999-12-31T23:59:59.999999-00:00:01",
        "0001-01-01T00:00:00+14:00",  # before the smallest
        "0001-01-01T00:00:00.999999+00:00:01",
    ],
)
def test_a_time_out_of_range_in_utc_is_none(text: str) -> None:
    assert parse_sinch_time(text) is None
    assert parse_sinch_time(datetime.fromisoformat(text)) is None
    # And a document holding one is read, not refused: the time is unknown, the rest is kept.
    document = {"id": "reg-1", "status": "APPROVED", "createTime": text, "updateTime": text}
    registration = SinchRegistration.from_document(document)
    assert registration.create_time is None
    assert registration.update_time is None
    assert registration.raw == document


def test_the_ends_of_the_range_are_kept() -> None:
    assert parse_sinch_time("9999-12-31T23:59:59.999999Z") == LARGEST
    assert parse_sinch_time("9999-12-31T23:59:59.999999") == LARGEST
    assert parse_sinch_time("0001-01-01T00:00:00+00:00") == SMALLEST
    assert parse_sinch_time("9999-12-31T09:59:59.999999-14:00") == LARGEST
    assert parse_sinch_time("0001-01-01T14:00:00+14:00") == SMALLEST


# Any time, and often one within a day of either end, where an offset can push it out of range.
LOCAL_TIMES = (
    st.datetimes()
    | st.datetimes(min_value=datetime.max - timedelta(days=1))
    | st.datetimes(max_value=datetime.min + timedelta(days=1))
)


@given(local=LOCAL_TIMES, offset=OFFSETS)
def test_any_time_with_any_offset_is_its_instant_in_utc_or_none(
    local: datetime, offset: timedelta
) -> None:
    instant = instant_in_microseconds(local, offset)
    in_range = 0 <= instant <= (LARGEST - SMALLEST) // ONE_MICROSECOND
    expected = SMALLEST + instant * ONE_MICROSECOND if in_range else None
    assert parse_sinch_time(as_iso(local, offset)) == expected
    assert parse_sinch_time(local.replace(tzinfo=timezone(offset))) == expected


@given(value=st.text() | st.from_regex(r"\A[0-9T:+\-.Zz ]{1,40}\Z") | st.binary())
def test_any_string_is_a_utc_time_or_none(value: str | bytes) -> None:
    parsed = parse_sinch_time(value)
    assert parsed is None or parsed.utcoffset() == timedelta(0)


@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=10,
    )
)
def test_any_json_value_is_a_utc_time_or_none(value: object) -> None:
    parsed = parse_sinch_time(value)
    assert parsed is None or parsed.utcoffset() == timedelta(0)
