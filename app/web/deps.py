"""What the lifespan builds once per process, and the `Annotated` dependencies that hand it out."""

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
    from app.callbacks.secrets import AcceptedSecrets
    from app.callbacks.writer import InboxWriter
    from app.changes.sequencer import Sequencer
    from app.changes.service import FeedReader
    from app.changes.signal import ChangeSignal
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
    inbox: InboxWriter
    sinch: SinchClient | None
    """None when the Sinch credentials are not configured."""
    changes: ChangeSignal
    """Wakes the change feed's waiting readers when changes are numbered (any process)."""
    feed: FeedReader
    """Reads the change feed once for all of this process's readers at one position."""
    sequencer: Sequencer
    """Numbers the changes this process records (a refresh), after their commit."""
    tokens: TokenDirectory
    """The database tokens of the internal API, as this process last read them."""
    callback_secrets: AcceptedSecrets
    """The callback secrets this process accepts (environment and rotated ones), kept fresh."""


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
