"""Making, listing and revoking database tokens. Nothing here commits: the caller's transaction
holds the token's row and its audit entry together.

A token is `sr_` and 43 characters of `secrets.token_urlsafe(32)` (256 random bits); only its hex
SHA-256 is kept. With that much entropy a plain hash cannot be reversed or guessed, so no key (and
no slow hash) is needed, and a presented token is found by one indexed lookup of its hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.actions import Action
from app.audit.repository import Actor, record
from app.core.models import ApiToken, Project
from app.tokens.principal import Scope

PREFIX = "sr_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""Letters, digits, `.`, `_`, `-`, starting with a letter or digit: never `env:<n>` (the
bootstrap tokens' names), and fit for a log line."""


class TokenError(Exception):
    """A token request that cannot be done: the message says why (never holds a token)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


async def create(
    session: AsyncSession,
    name: str,
    scope: Scope,
    *,
    actor: Actor,
    now: datetime,
    projects: Collection[str] = (),
) -> str:
    """Keep a new token called `name` (its hash) and audit it; answers the token, the one time it
    is ever seen. Limited to `projects` when some are given (none: every project). `TokenError`
    when the name is malformed or was ever used (revoked included), or a project is unknown."""
    if not NAME_PATTERN.fullmatch(name):
        raise TokenError(
            "a token's name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit"
        )
    existing = await session.scalar(select(ApiToken.id).where(ApiToken.name == name))
    if existing is not None:
        raise TokenError(f"a token named {name} exists or existed: names are never reused")
    limit = sorted(set(projects)) or None
    if limit is not None:
        known = set(
            (await session.execute(select(Project.id).where(Project.id.in_(limit)))).scalars()
        )
        unknown = [project for project in limit if project not in known]
        if unknown:
            raise TokenError(f"no project is called {', '.join(unknown)}")
    token = new_token()
    session.add(
        ApiToken(
            name=name,
            scope=scope.value,
            token_hash=hash_token(token),
            created_at=now,
            project_ids=limit,
        )
    )
    record(
        session,
        actor,
        Action.TOKEN_CREATE,
        name,
        now=now,
        detail={"scope": scope.value, "projects": limit},
        project_id=None,
    )
    return token


async def revoke(session: AsyncSession, name: str, *, actor: Actor, now: datetime) -> None:
    """Revoke the token called `name` and audit it. `TokenError` when there is no such live token.

    The row stays (revoked), so that its name is never given to another token."""
    token = await session.scalar(
        select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    )
    if token is None:
        raise TokenError(f"no live token is named {name}")
    token.revoked_at = now
    record(
        session,
        actor,
        Action.TOKEN_REVOKE,
        name,
        now=now,
        detail={"scope": token.scope},
        project_id=None,
    )


async def every(session: AsyncSession, *, revoked: bool = False) -> Sequence[ApiToken]:
    """The tokens by name; revoked ones only when `revoked`."""
    statement = select(ApiToken).order_by(ApiToken.name)
    if not revoked:
        statement = statement.where(ApiToken.revoked_at.is_(None))
    return (await session.execute(statement)).scalars().all()
