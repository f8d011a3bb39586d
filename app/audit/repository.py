"""Every write to `audit_log`. Nothing here commits: an entry belongs to its write's transaction."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.actions import Action
from app.core.models import AuditEntry

_MAX = 255


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, and from where: a token's name and the request's addresses, or the command line."""

    name: str
    client: str | None = None
    forwarded_for: str | None = None

    @classmethod
    def of_request(cls, request: Request, name: str) -> Actor:
        """The caller of an API request (or a console form): `name` is its principal's name.

        `client` is the client's address as uvicorn gives it: the TCP peer, or the address of
        `X-Forwarded-For` when the peer is a proxy uvicorn trusts (`--forwarded-allow-ips`,
        127.0.0.1 unless set); `forwarded_for` keeps the header as sent, whoever sent it.
        """
        peer = request.client.host if request.client else None
        return cls(name, peer, request.headers.get("x-forwarded-for"))

    @classmethod
    def command_line(cls) -> Actor:
        """`python -m app ...`: the operating system's user on this host."""
        try:
            user = getpass.getuser()
        except Exception:  # no user name in a container without /etc/passwd entry
            user = "unknown"
        return cls(f"cli:{user}", f"cli@{socket.gethostname()}")


def record(
    session: AsyncSession,
    actor: Actor,
    action: Action,
    target: str | None,
    *,
    now: datetime,
    project_id: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an entry to `session`; it is written with the caller's transaction or not at all.

    `project_id`: the project the write concerned (a registration's, an event's, a project's
    callback secrets'); None for the deployment's own writes (tokens, subscriptions).

    `detail` must never hold a secret (a token, an HMAC secret): answers show it as is.
    """
    session.add(
        AuditEntry(
            project_id=project_id,
            at=now,
            actor=actor.name[:100],
            action=action.value,
            target=target[:_MAX] if target is not None else None,
            client=actor.client[:_MAX] if actor.client is not None else None,
            forwarded_for=actor.forwarded_for[:_MAX] if actor.forwarded_for else None,
            detail=detail,
        )
    )
