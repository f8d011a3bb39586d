"""The signature check: known vectors, and hypothesis over any body and any secret."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from app.callbacks.signature import matching_secret, sign

SECRETS = [SecretStr("current"), SecretStr("previous")]


def test_known_vectors() -> None:
    # RFC 2202 test case 2 for HMAC-SHA1.
    assert sign(b"what do ya want for nothing?", "Jefe") == (
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    )
    body = b'{"eventId":"e1","status":"APPROVED"}'
    expected = hmac.new(b"current", body, hashlib.sha1).hexdigest()
    assert sign(body, "current") == expected
    assert matching_secret(body, expected, SECRETS) == 0
    assert matching_secret(body, sign(body, "previous"), SECRETS) == 1


def test_either_hex_case_and_surrounding_space_are_accepted() -> None:
    body = b"{}"
    signature = sign(body, "current")
    assert matching_secret(body, signature.upper(), SECRETS) == 0
    assert matching_secret(body, f"  {signature} ", SECRETS) == 0


def test_missing_empty_or_foreign_signatures_fail() -> None:
    body = b"{}"
    assert matching_secret(body, None, SECRETS) is None
    assert matching_secret(body, "", SECRETS) is None
    assert matching_secret(body, sign(body, "someone-else"), SECRETS) is None
    assert matching_secret(body, sign(body + b" ", "current"), SECRETS) is None
    assert matching_secret(body, "é" * 40, SECRETS) is None
    assert matching_secret(body, sign(body, "current"), []) is None


@given(
    body=st.binary(max_size=4096), secret=st.text(min_size=1, max_size=64), pick=st.integers(0, 2)
)
def test_a_signature_by_an_accepted_secret_passes(body: bytes, secret: str, pick: int) -> None:
    secrets = [SecretStr(f"other-{n}") for n in range(3)]
    secrets[pick] = SecretStr(secret)
    found = matching_secret(body, sign(body, secret), secrets)
    assert found is not None
    assert secrets[found].get_secret_value() == secret


@given(body=st.binary(max_size=1024), secret=st.text(min_size=1, max_size=64), forged=st.text())
def test_every_other_string_fails(body: bytes, secret: str, forged: str) -> None:
    genuine = sign(body, secret)
    if forged.strip().lower() == genuine:
        return  # the one string that is the signature
    assert matching_secret(body, forged, [SecretStr(secret)]) is None
