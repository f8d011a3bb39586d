"""Console sessions: a random id in an HttpOnly, SameSite=Strict cookie, mapped in Redis to the
principal's NAME, a FINGERPRINT of the token signed in with, and the session's CSRF token. The token
itself is never stored: it is checked once (`authenticate`), and each later request asks
`principal_named` who that name is now, with that fingerprint, so a revoked token ends its sessions
at their next request, and so does a bootstrap token replaced in `INTERNAL_API_TOKENS` (its name
`env:N` passes to the new token; the fingerprint does not).

Redis holds `console:session:<sha256 of the id>` (a leaked Redis dump names no usable cookie)
with an expiry of `CONSOLE_SESSION_SECONDS`, the cookie's own Max-Age; sign-out deletes it. Redis
is shared by every API process, so any of them serves any session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from app.web.auth import token_fingerprint

SESSION_COOKIE = "console_session"
SIGN_IN_COOKIE = "console_sign_in"
"""A random value the sign-in form repeats (double submit): a sign-in form posted from another
site cannot know it, so nobody can sign a person into a session of theirs (login CSRF)."""
COOKIE_PATH = "/console"
_KEY = "console:session:"


@dataclass(frozen=True, slots=True)
class Session:
    principal: str
    """The name of the principal signed in (`Principal.name`), never its token."""
    csrf: str
    """Every form of this session carries it; a POST without it is refused."""
    fingerprint: str
    """`token_fingerprint(token)` of the token signed in with; "" for a session older than this
    field (a bootstrap token's such session ends at its next request)."""


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _key(session_id: str) -> str:
    return _KEY + hashlib.sha256(session_id.encode()).hexdigest()


def same(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented CSRF (or sign-in) value."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


async def create(redis: Redis, principal: str, token: str, lifetime_seconds: int) -> str:
    """A new session for `principal`, signed in with `token` (only its fingerprint is kept);
    answers its id (the cookie's value)."""
    session_id = new_secret()
    value = json.dumps(
        {"principal": principal, "fingerprint": token_fingerprint(token), "csrf": new_secret()}
    )
    await redis.set(_key(session_id), value, ex=lifetime_seconds)
    return session_id


async def load(redis: Redis, session_id: str | None) -> Session | None:
    """The session named by the cookie's value; None when absent, expired or signed out."""
    if not session_id or len(session_id) > 128:
        return None
    raw = await redis.get(_key(session_id))
    if raw is None:
        return None
    data = json.loads(raw)
    return Session(
        principal=str(data["principal"]),
        csrf=str(data["csrf"]),
        fingerprint=str(data.get("fingerprint", "")),
    )


async def end(redis: Redis, session_id: str | None) -> None:
    if session_id and len(session_id) <= 128:
        await redis.delete(_key(session_id))
