"""How the console words prices, reasons, tones and times (`app.console.present`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.console import aging, present
from app.registrations.facts import Reason

AT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("price", "shown"),
    [
        (
            {
                "currency": "EUR",
                "frequency": "MONTHLY",
                "mode": "AUTOMATIC",
                "recurrentFeeAmount": "10.00",
                "setupFeeAmount": "120.00",
            },
            "EUR 120.00 one-time, EUR 10.00 monthly",
        ),
        (
            {"currency": "SEK", "recurrentFeeAmount": "95", "setupFeeAmount": "0.00"},
            "SEK 95.00 recurring",
        ),
        ({"currency": "USD", "setupFeeAmount": 15, "frequency": "YEARLY"}, "USD 15.00 one-time"),
        ({"currency": "EUR", "recurrentFeeAmount": "0", "setupFeeAmount": "0.00"}, "no fee"),
        (
            {"currency": "EUR", "recurrentFeeAmount": "1", "frequency": "DAILY"},
            "EUR 1.00 daily",
        ),
        ({"amount": "x"}, "amount: x"),
        ({"currency": "EUR", "setupFeeAmount": "NaN"}, "currency: EUR, setupFeeAmount: NaN"),
        (None, "-"),
        ({}, "-"),
    ],
)
def test_money(price: dict[str, object] | None, shown: str) -> None:
    assert present.money(price) == shown


def _log(state: str, message: str, at: str) -> dict[str, str]:
    return {"registrationState": state, "message": message, "createTime": at}


def test_the_reason_is_the_newest_log_of_the_current_status() -> None:
    document = {
        "logs": [
            _log("PENDING", "Send the trademark", "2024-05-01T10:00:00"),
            _log("IN_QUEUE", "Registration submitted", "2024-05-01T09:00:00"),
            _log("PENDING", "Still missing: the trademark", "2024-05-02T10:00:00"),
            _log("APPROVED", "", "2024-05-03T10:00:00"),
        ]
    }
    found = present.explaining_reason("PENDING", document, None)
    assert found is not None and found.message == "Still missing: the trademark"
    # An APPROVED registration is not explained by its submission, nor by an empty message.
    assert present.explaining_reason("APPROVED", document, None) is None
    kept = Reason(message="Registration submitted", state="IN_QUEUE", at=AT)
    assert present.explaining_reason("APPROVED", document, kept) is None
    # A callback's comments for the current status explain it when the logs do not.
    comments = Reason(message="Rejected: trademark", state="REJECTED", at=AT)
    assert present.explaining_reason("REJECTED", None, comments) == comments
    assert present.explaining_reason("REJECTED", {"logs": "junk"}, comments) == comments


def test_tones_say_what_a_status_means() -> None:
    assert [present.tone(s) for s in ("APPROVED", "REJECTED", "PENDING", "IN_PROGRESS")] == [
        "good",
        "bad",
        "waiting",
        "busy",
    ]
    assert present.tone("DRAFT") == present.tone("SOMETHING_NEW") == present.tone(None) == "neutral"
    assert [present.tone(s) for s in ("processed", "failed", "invalid", "pending")] == [
        "good",
        "bad",
        "bad",
        "busy",
    ]


def test_one_time_format_and_no_backticks() -> None:
    assert present.when(AT) == "2024-05-01 10:00:00 UTC"
    assert present.when(None) == "-"
    assert present.plain("`status` names no state.") == "status names no state."
    assert present.plain(None) == ""


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (30, "30 s"),
        (59.7, "1 min"),
        (300, "5 min"),
        (5.2 * 3600, "5.2 h"),
        (3.4 * 86_400, "3.4 d"),
    ],
)
def test_durations_as_an_operator_reads_them(seconds: float | None, shown: str) -> None:
    assert present.duration(seconds) == shown


def test_figures_are_stale_after_three_missed_runs_of_the_forecasts_cron() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert not aging.stale(None, 300, now)  # no figure yet: nothing to flag
    assert not aging.stale(now - timedelta(seconds=900), 300, now)
    assert aging.stale(now - timedelta(seconds=901), 300, now)
    assert aging.stale(now - timedelta(seconds=91), 30, now)  # the sandbox's 30 s
