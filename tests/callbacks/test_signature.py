"""The signature check: known vectors, and hypothesis over any body and any secret."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from app.callbacks import signature as verifier
from app.callbacks.signature import matching_secret
from tests.support.signing import RFC_2202_HMAC_SHA1, sign

SECRETS = [SecretStr("current"), SecretStr("previous")]


# The RFC 2202 cases whose keys are text (UTF-8), as a callback secret is.
TEXT_KEY_VECTORS = [v for v in RFC_2202_HMAC_SHA1 if all(byte < 0x80 for byte in v[0])]


@pytest.mark.parametrize(("key", "data", "digest"), RFC_2202_HMAC_SHA1)
def test_the_test_signer_matches_rfc_2202(key: bytes, data: bytes, digest: str) -> None:
    # The signer every callback test uses, proven against the published vectors, not against
    # the verifier it is there to check.
    assert sign(data, key) == digest


@pytest.mark.parametrize(("key", "data", "digest"), TEXT_KEY_VECTORS)
def test_the_verifier_accepts_the_rfc_2202_digests(key: bytes, data: bytes, digest: str) -> None:
    secret = key.decode("utf-8")
    assert matching_secret(data, digest, [SecretStr("other"), SecretStr(secret)]) == 1
    assert matching_secret(data, digest, [SecretStr("other")]) is None
    assert verifier.sign(data, secret) == digest  # what `python -m app sign` prints


def test_text_key_vectors_are_there() -> None:
    assert len(TEXT_KEY_VECTORS) == 4  # cases 1, 2, 4 and 5


def test_the_current_and_the_previous_secret_are_told_apart() -> None:
    body = b'{"eventId":"e1","status":"APPROVED"}'
    assert matching_secret(body, sign(body, "current"), SECRETS) == 0
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
