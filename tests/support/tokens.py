"""Database tokens for tests, made by the service's own function (as `python -m app token
create` makes them)."""

from __future__ import annotations

from collections.abc import Collection

from app.audit.repository import Actor
from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.settings import Settings
from app.tokens import service
from app.tokens.principal import Scope


async def make_token(
    settings: Settings, name: str, scope: Scope | str, *, projects: Collection[str] = ()
) -> str:
    """A new live token called `name` (limited to `projects` when given); answers the token."""
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine).begin() as session:
            return await service.create(
                session,
                name,
                Scope(scope),
                actor=Actor("test", "test"),
                now=utcnow(),
                projects=projects,
            )
    finally:
        await engine.dispose()


async def revoke_token(settings: Settings, name: str) -> None:
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine).begin() as session:
            await service.revoke(session, name, actor=Actor("test", "test"), now=utcnow())
    finally:
        await engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
