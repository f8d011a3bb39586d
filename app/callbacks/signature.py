"""The callback signature check. Pure: bytes and secrets in, the matching secret's index out."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

SIGNATURE_HEADER = "X-Sinch-Signature"


def sign(body: bytes, secret: str) -> str:
    """Sinch's signature of `body`: lowercase hex HMAC-SHA1 keyed with the UTF-8 secret."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha1).hexdigest()


def matching_secret(body: bytes, signature: str | None, secrets: Sequence[SecretStr]) -> int | None:
    """Return the index in `secrets` of the secret that signed `body`, or None.

    The signature is hex in either case, surrounding white space ignored. Every secret is tried
    (no early exit) and each comparison is constant-time, so the time taken says nothing about
    which part was wrong.
    """
    if not signature:
        return None
    given = signature.strip().lower().encode("ascii", errors="replace")
    found: int | None = None
    for index, secret in enumerate(secrets):
        expected = sign(body, secret.get_secret_value()).encode("ascii")
        if hmac.compare_digest(expected, given) and found is None:
            found = index
    return found
