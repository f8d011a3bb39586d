"""How the simulator signs callbacks, the way Sinch does (docs/sinch.md).

Deliberately separate from `app.callbacks.signature`: the simulator plays Sinch, and a test that
checked the service's verifier against the verifier's own signer would prove nothing.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Sinch-Signature"


def sign(body: bytes, secret: str) -> str:
    """Lowercase hex HMAC-SHA1 of `body` keyed with the UTF-8 bytes of `secret`."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha1).hexdigest()
