"""The pure rules of subscriptions: URLs, secrets and signatures (checked with the
`standardwebhooks` reference library), and the retry schedule."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from app.subscriptions.rules import (
    CAUSES,
    UrlRefused,
    cause,
    check_url,
    failing,
    new_secret,
    next_attempt,
    signature,
)

ALLOWED = ["127.0.0.1", "*.svc.internal"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAUSES = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hooks",
        "https://billing.svc.internal/sinch?team=a",
        "HTTPS://Billing.SVC.internal/x",
    ],
)
def test_allowed_urls_are_kept(url: str) -> None:
    assert check_url(url, ALLOWED) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http://user:pw@127.0.0.1/x", "credentials"),
        ("http://user@127.0.0.1/x", "credentials"),
        ("http://169.254.169.254/latest/meta-data", "not allowed"),
        ("http://10.0.0.1/x", "not allowed"),
        ("http://svc.internal.evil.com/x", "not allowed"),
        ("http:///nohost", "no host"),
        ("http://127.0.0.1:99999/x", "cannot be read"),
        ("http://127.0.0.1/x#frag", "fragment"),
        ("http://127.0.0.1/" + "x" * 3000, "longer"),
    ],
)
def test_other_urls_are_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(UrlRefused, match=why) as refused:
        check_url(url, ALLOWED)
    # Errors never echo input: not the host, nor anything else of the URL.
    host = urlsplit(url).netloc.rsplit("@", 1)[-1].split(":")[0]
    assert not host or host not in str(refused.value)


def test_with_no_allowed_host_every_url_is_refused() -> None:
    with pytest.raises(UrlRefused, match="SUBSCRIPTION_ALLOWED_HOSTS is empty"):
        check_url("http://127.0.0.1/x", [])


def test_signatures_verify_with_the_reference_library_for_each_secret() -> None:
    old, new = new_secret(), new_secret()
    assert old.startswith("whsec_") and old != new
    body = '{"type":"registration.changed","data":{"seq":1}}'
    now = datetime.now(UTC)
    header = signature([new, old], "msg_1", now, body)
    assert len(header.split(" ")) == 2
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": header,
    }
    for secret in (new, old):  # during a rotation's overlap either key verifies
        assert Webhook(secret).verify(body, headers) == {
            "type": "registration.changed",
            "data": {"seq": 1},
        }
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(new_secret()).verify(body, headers)


@given(
    keys=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=3),
    message=st.text(max_size=40),
    body=st.text(max_size=300),
    at=st.datetimes(
        min_value=datetime(1971, 1, 1),
        timezones=st.none() | st.sampled_from([UTC, timezone(timedelta(hours=-5))]),
    ),
)
def test_signatures_are_the_reference_library_s_signatures(
    keys: list[bytes], message: str, body: str, at: datetime
) -> None:
    secrets = [f"whsec_{base64.b64encode(key).decode()}" for key in keys]
    assert signature(secrets, message, at, body) == " ".join(
        Webhook(secret).sign(message, at, body) for secret in secrets
    )


def test_a_secret_written_without_its_padding_signs_as_the_reference_library() -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0").decode().rstrip("=")
    at = datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert signature([secret], "msg_1", at, "{}") == Webhook(secret).sign("msg_1", at, "{}")


def test_the_schedule_follows_the_pauses_then_gives_up() -> None:
    rng = random.Random(1)
    at = next_attempt(
        attempts=1, created_at=T0, now=T0, pauses=PAUSES, give_up_after=timedelta(days=3), rng=rng
    )
    assert at is not None and timedelta(seconds=4.5) <= at - T0 <= timedelta(seconds=5.5)
    late = T0 + timedelta(days=2, hours=20)
    assert (
        next_attempt(
            attempts=9, created_at=T0, now=late, pauses=PAUSES, give_up_after=timedelta(days=3)
        )
        is None
    )  # a 10 h pause would pass the 3 days


def test_retry_after_is_honoured_but_bounded() -> None:
    at = next_attempt(
        attempts=1,
        created_at=T0,
        now=T0,
        pauses=PAUSES,
        give_up_after=timedelta(days=3),
        retry_after=120,
    )
    assert at is not None and at - T0 == timedelta(seconds=120)
    at = next_attempt(
        attempts=1,
        created_at=T0,
        now=T0,
        pauses=PAUSES,
        give_up_after=timedelta(days=3),
        retry_after=10**9,
    )
    assert at is not None and at - T0 == timedelta(hours=24)


@given(attempts=st.integers(1, 100), seed=st.integers(0, 2**32))
def test_retries_last_at_least_three_days_with_the_default_pauses(attempts: int, seed: int) -> None:
    """Summing the pauses up to any attempt: retried until 3 days are spent, never before."""
    rng = random.Random(seed)
    now = T0
    for attempt in range(1, attempts + 1):
        at = next_attempt(
            attempts=attempt,
            created_at=T0,
            now=now,
            pauses=PAUSES,
            give_up_after=timedelta(days=3),
            rng=rng,
        )
        if at is None:
            assert now - T0 > timedelta(days=3) - timedelta(hours=11)
            return
        assert at > now
        now = at


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (404, "answered 404", "http_4xx"),
        (410, "answered 410", "http_4xx"),
        (503, "answered 503", "http_5xx"),
        (307, "answered 307", "http_other"),
        (None, "no answer within 15 s", "timeout"),
        (None, "could not connect", "connection"),
        (None, "the receiver closed the connection without an answer", "connection"),
        (None, "not sent: the URL's host is not allowed (SUBSCRIPTION_ALLOWED_HOSTS)", "not_sent"),
        (None, "could not deliver (ClientPayloadError)", "other"),
        (None, None, "other"),
    ],
)
def test_each_failure_has_one_cause(status: int | None, error: str | None, expected: str) -> None:
    assert cause(status, error) == expected
    assert expected in CAUSES


def test_a_subscription_is_flagged_once_it_has_failed_for_the_alert_time() -> None:
    alert = timedelta(minutes=15)
    assert failing(True, T0, T0 + alert, alert)
    assert not failing(True, T0, T0 + alert - timedelta(seconds=1), alert)
    assert not failing(True, None, T0 + alert, alert), "succeeding"
    assert not failing(False, T0, T0 + 2 * alert, alert), "disabled: not flagged as failing"
