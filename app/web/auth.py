"""Bearer tokens of the internal API, and what each may do (its scope).

`authenticate` answers who presented a token (a `Principal`: a name and a `Scope`), or None.
`require_read` guards every `/v1` route that only looks, `require_write` every one that acts. A
request passes only with `Authorization: Bearer <t>` where `t` is accepted; with no token
configured everyone is refused. A refusal is a 401 problem with `WWW-Authenticate: Bearer` (no
valid token) or a 403 problem (a valid token without the scope), and never says which part was
wrong beyond "missing" or "not accepted", nor echoes the token.

Tokens in `INTERNAL_API_TOKENS` are the bootstrap: scope `write`, named `env:<position>`. The
others live in the database (`python -m app token create NAME --scope read|write`, app/tokens/):
each API process reads them again at most `TOKEN_CACHE_SECONDS` after its last read, so a
`token revoke` is refused by every process within that (the contract allows 5 s).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from app.audit.repository import Actor
from app.core.problems import ProblemError
from app.core.schemas import problem_responses, text_filter
from app.tokens.principal import Principal, Scope, TokenLookupError, Visible
from app.web.deps import Resources, ResourcesDep

# auto_error=False: FastAPI's own refusal is not problem+json; `require_token` makes the 401. The
# scheme still puts the bearer security scheme into the OpenAPI document.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="One of the tokens configured in `INTERNAL_API_TOKENS` (scope `write`), or one "
    "made by `python -m app token create NAME --scope read|write`.",
)

CHALLENGE = {"WWW-Authenticate": "Bearer"}


class UnauthorizedError(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers=dict(CHALLENGE))


class ForbiddenError(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(403, detail)


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


def token_fingerprint(token: str) -> str:
    """A one-way digest naming `token` (SHA-256 with a prefix of its own): equal for the same
    token, useless to present as a token. Tokens are random and long, so no guess finds one. A
    console session keeps it instead of the token (`principal_named`)."""
    # The prefix predates this module (the console's sessions): kept, so sessions stay valid.
    return hashlib.sha256(b"console-session-token\0" + token.encode()).hexdigest()


def _bootstrap_principal(presented: str, accepted: Sequence[SecretStr]) -> Principal | None:
    """The `INTERNAL_API_TOKENS` entry `presented` equals, as a principal (every entry compared,
    in constant time, as `token_accepted`)."""
    candidate = presented.encode()
    found: Principal | None = None
    for position, token in enumerate(accepted, start=1):
        if hmac.compare_digest(candidate, token.get_secret_value().encode()):
            found = found or Principal(f"env:{position}", Scope.WRITE)
    return found


class TokensUnavailableError(ProblemError):
    def __init__(self) -> None:
        super().__init__(503, "Tokens cannot be checked now (the database does not answer).")


async def authenticate(resources: Resources, presented: str) -> Principal | None:
    """Who presented `presented`, or None when no accepted token equals it.

    `INTERNAL_API_TOKENS` first (no database needed), then the live database tokens as this
    process last read them (at most `TOKEN_CACHE_SECONDS` ago). A 503 problem
    (`TokensUnavailableError`) when a database token would have to be looked up and the tokens
    cannot be read.
    """
    found = _bootstrap_principal(presented, resources.settings.internal_api_tokens)
    if found is not None:
        return found
    try:
        return await resources.tokens.by_token(presented)
    except TokenLookupError:
        raise TokensUnavailableError from None


async def principal_named(resources: Resources, name: str, fingerprint: str) -> Principal | None:
    """The principal called `name` as it stands now, or None when no accepted token has that name
    any more (revoked, or removed from the configuration): a console session asks this on each
    request, so that revoking a token also ends the sessions signed in with it (within
    `TOKEN_CACHE_SECONDS`).

    A database token's name is never reused. A bootstrap token's is (`env:N` is a position in
    `INTERNAL_API_TOKENS`), so `env:N` is answered only while the token at position N is still the
    one whose `session.fingerprint` is `fingerprint`: replacing or removing it ends its sessions,
    and a session never acts under another token's name."""
    accepted = resources.settings.internal_api_tokens
    if name.startswith("env:"):
        number = name[4:]
        if not (number.isdigit() and 1 <= int(number) <= len(accepted)):
            return None
        current = token_fingerprint(accepted[int(number) - 1].get_secret_value())
        if not hmac.compare_digest(current.encode(), fingerprint.encode()):
            return None
        return Principal(name, Scope.WRITE)
    try:
        return await resources.tokens.by_name(name)
    except TokenLookupError:
        raise TokensUnavailableError from None


_NONE_CONFIGURED = "No internal API token is configured: every request is refused."


async def _any_token(resources: Resources) -> bool:
    if resources.settings.internal_api_tokens:
        return True
    try:
        return await resources.tokens.any()
    except TokenLookupError:
        raise TokensUnavailableError from None


async def identify(resources: Resources, presented: str | None) -> Principal:
    """Who presented the bearer token `presented` (None: the request had none); else an
    `UnauthorizedError` (401) saying only "missing" or "not accepted", or `TokensUnavailableError`.
    Scopes are not checked here."""
    if presented is None:
        if not await _any_token(resources):
            raise UnauthorizedError(_NONE_CONFIGURED)
        raise UnauthorizedError("A bearer token is required (Authorization: Bearer <token>).")
    principal = await authenticate(resources, presented)
    if principal is None:
        if not await _any_token(resources):
            raise UnauthorizedError(_NONE_CONFIGURED)
        raise UnauthorizedError("The bearer token is not accepted.")
    return principal


async def _principal(
    request: Request,
    resources: ResourcesDep,
    credentials: HTTPAuthorizationCredentials | None,
    needed: Scope,
) -> Principal:
    principal = await identify(resources, credentials.credentials if credentials else None)
    if not principal.scope.allows(needed):
        raise ForbiddenError(f"This token's scope is `{principal.scope}`; this needs `{needed}`.")
    request.state.principal = principal
    return principal


CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
"""The `Authorization: Bearer` credentials, if any (their check is `identify`'s)."""


async def require_read(
    request: Request, resources: ResourcesDep, credentials: CredentialsDep
) -> Principal:
    """The caller, with a token of scope `read` or `write`; else 401 (or 403)."""
    return await _principal(request, resources, credentials, Scope.READ)


async def require_write(
    request: Request, resources: ResourcesDep, credentials: CredentialsDep
) -> Principal:
    """The caller, with a token of scope `write`; else 401, or 403 with a `read` token."""
    return await _principal(request, resources, credentials, Scope.WRITE)


require_token = require_read
"""Every `/v1` route: at least `read` (the routes that act add `require_write`)."""


def api_router(
    prefix: str,
    tag: str,
    *,
    guard: Callable[..., Awaitable[Principal]] = require_token,
    errors: Sequence[int] = (),
) -> APIRouter:
    """A router of the internal API under `prefix`: every route passes `guard` first, and is
    documented as answering 401 and 422 problems, and those of `errors`, besides its own."""
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        dependencies=[Depends(guard)],
        responses=problem_responses(*sorted({401, 422, *errors})),
    )


PrincipalDep = Annotated[Principal, Depends(require_read)]
WriterDep = Annotated[Principal, Depends(require_write)]


async def project_limit(principal: PrincipalDep) -> Visible:
    """The projects the caller's token is limited to (None: every project): what a route that
    names one row (by id) passes to its lookup, so another project's row is 404 like a missing
    one."""
    return principal.projects


LimitDep = Annotated[Visible, Depends(project_limit)]

ProjectIdQuery = Annotated[
    str | None,
    text_filter(
        "Only this project's items (Sinch's project id). A project this token is not limited "
        "to, or that does not exist, gives no items.",
        alias="projectId",
    ),
]


async def visible_projects(principal: PrincipalDep, project_id: ProjectIdQuery = None) -> Visible:
    """The projects a listing shows: its `projectId` filter within the token's limit
    (`Principal.visible`)."""
    return principal.visible(project_id)


VisibleDep = Annotated[Visible, Depends(visible_projects)]
"""A listing under /v1: the `projectId` filter and the token's limit, as one set of projects for
`app.projects.queries.within`."""


async def require_actor(request: Request, principal: WriterDep) -> Actor:
    """The caller of a route that acts (scope `write`), as the audit trail records it."""
    return Actor.of_request(request, principal.name)


ActorDep = Annotated[Actor, Depends(require_actor)]
"""A route that acts and audits: `write` scope, and who and from where for `app.audit`."""
