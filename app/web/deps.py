"""What the lifespan builds once per process for every route (`Resources`), and the `Annotated`
dependencies that hand it out.

What belongs to one domain package (the callback inbox and secrets, the change feed's signal,
reader and sequencer) is not here: the lifespan keeps it in its state under its own name, and the
package hands it out itself (e.g. `app.changes.live`), so that this shared edge names no domain
type."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from arq import ArqRedis
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.metrics import Metrics
from app.core.settings import Settings

if TYPE_CHECKING:
    from app.sinch.client import SinchClient
    from app.tokens.directory import TokenDirectory


@dataclass(frozen=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]
    """Sessions for routes that only read (see `create_reader`)."""
    redis: ArqRedis
    metrics: Metrics
    sinch: SinchClient | None
    """None when the Sinch credentials are not configured."""
    tokens: TokenDirectory
    """The database tokens of the internal API, as this process last read them."""


async def get_resources(request: Request) -> Resources:
    # async: a plain function would be run in a worker thread on every request.
    resources: Resources = request.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """A session for one request; the route owns the transaction (commits what it changes)."""
    async with resources.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_read_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """A session for a route that only reads: no transaction to begin or roll back."""
    async with resources.reader() as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
