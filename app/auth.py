"""Bearer tokens of the internal API (`INTERNAL_API_TOKENS`).

`require_token` guards every `/v1` route: a request passes only with `Authorization: Bearer <t>`
where `t` equals one of the configured tokens. With no token configured everyone is refused. A
refusal is a 401 problem with `WWW-Authenticate: Bearer`, and never says which part was wrong
beyond "missing" or "not accepted".
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from app.deps import ResourcesDep
from app.problems import ProblemError

# auto_error=False: FastAPI's own refusal is not problem+json; `require_token` makes the 401. The
# scheme still puts the bearer security scheme into the OpenAPI document.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="One of the tokens configured in `INTERNAL_API_TOKENS`.",
)

CHALLENGE = {"WWW-Authenticate": "Bearer"}


class UnauthorizedError(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers=dict(CHALLENGE))


def token_accepted(presented: str, accepted: Sequence[SecretStr]) -> bool:
    """True when `presented` equals one of `accepted`.

    Every accepted token is compared, in constant time, even after a match: the time taken says
    nothing about which token matched or how much of one did.
    """
    candidate = presented.encode()
    matched = False
    for token in accepted:
        matched |= hmac.compare_digest(candidate, token.get_secret_value().encode())
    return matched


async def require_token(
    resources: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Refuse (401) a request without one of the configured bearer tokens."""
    accepted = resources.settings.internal_api_tokens
    if not accepted:
        raise UnauthorizedError("No internal API token is configured: every request is refused.")
    if credentials is None:
        raise UnauthorizedError("A bearer token is required (Authorization: Bearer <token>).")
    if not token_accepted(credentials.credentials, accepted):
        raise UnauthorizedError("The bearer token is not accepted.")
