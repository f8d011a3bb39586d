"""An independent signer for callbacks, the way Sinch signs them: lowercase hex HMAC-SHA1 of the
raw body, keyed with the secret's UTF-8 bytes.

Tests sign with this, never with `app.callbacks.signature.sign`: a verifier checked against its own
signer would pass whatever both got wrong. This one is proven against RFC 2202's published
HMAC-SHA1 vectors (tests/callbacks/test_signature.py).
"""

from __future__ import annotations

import hashlib
import hmac

# RFC 2202, section 3 (HMAC-SHA-1): (key, data, digest) of each published test case.
RFC_2202_HMAC_SHA1 = [
    (b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
    (b"Jefe", b"what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    (b"\xaa" * 20, b"\xdd" * 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
    (bytes(range(1, 26)), b"\xcd" * 50, "4c9007f4026250c6bc8414f9bf50c86c2d7235da"),
    (b"\x0c" * 20, b"Test With Truncation", "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"),
    (
        b"\xaa" * 80,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "aa4ae5e15272d00e95705637ce8a3b55ed402112",
    ),
    (
        b"\xaa" * 80,
        b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
        "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
    ),
]


def sign(body: bytes, secret: str | bytes) -> str:
    """The `X-Sinch-Signature` value of `body` under `secret` (a str is keyed by its UTF-8)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha1).hexdigest()
