"""One API process's view of the database tokens: which token hash is whom, fresh to within
`ttl` seconds.

The whole table of live tokens (tens of rows) is read at most once per `ttl`, when a request finds
the last read older than that, and held as two dicts: a request costs a SHA-256 and a dict lookup,
a wrong token costs no query (so guessing cannot load the database), and a revocation is seen by
every process at most `ttl` seconds (plus one read) after its commit.

Last use is written without holding up the request: at most once a minute per token and process
(`TOUCH_SECONDS`), in a task of its own, and only where the row's time is older still, so several
processes do not write the same minute twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import ApiToken
from app.tokens.principal import Principal, Scope, TokenLookupError
from app.tokens.service import hash_token

log = logging.getLogger(__name__)

TOUCH_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class _Known:
    id: int
    principal: Principal
    last_used_at: datetime | None


@dataclass(eq=False, repr=False, slots=True)
class TokenDirectory:
    """The live database tokens as this process last read them (module docstring). One per API
    process, built by its lifespan."""

    reader: async_sessionmaker[AsyncSession]
    """Reads the tokens' table."""
    writer: async_sessionmaker[AsyncSession]
    """Writes last uses."""
    _: KW_ONLY
    ttl: float
    """Seconds a read of the table is used for."""
    clock: Callable[[], float] = time.monotonic
    _by_hash: dict[str, _Known] = field(init=False, default_factory=dict)
    _by_name: dict[str, _Known] = field(init=False, default_factory=dict)
    _read_at: float | None = field(init=False, default=None)
    """When the last read started (`clock`); None before the first."""
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _touched: dict[int, datetime] = field(init=False, default_factory=dict)
    """Per token id, the last use this process wrote (or found written)."""
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    """The last-use writes in flight (`close` awaits them)."""

    async def by_token(self, presented: str) -> Principal | None:
        """Whom the live database token `presented` names, or None. `TokenLookupError` when the
        tokens cannot be read."""
        await self._fresh()
        known = self._by_hash.get(hash_token(presented))
        if known is None:
            return None
        self._note_use(known)
        return known.principal

    async def by_name(self, name: str) -> Principal | None:
        """The live database token called `name`, as a principal, or None."""
        await self._fresh()
        known = self._by_name.get(name)
        return known.principal if known is not None else None

    async def any(self) -> bool:
        """Whether any live database token exists."""
        await self._fresh()
        return bool(self._by_name)

    async def close(self, seconds: float = 5.0) -> None:
        """Let last-use writes in flight finish (the lifespan's end), for at most `seconds`:
        then they are cancelled (a lost "last used" costs nothing but its accuracy)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def _fresh(self) -> None:
        if self._read_at is not None and self.clock() - self._read_at < self.ttl:
            return
        async with self._lock:
            # Another request may have read while this one waited for the lock.
            if self._read_at is not None and self.clock() - self._read_at < self.ttl:
                return
            started = self.clock()
            try:
                async with self.reader() as session:
                    rows = (
                        await session.execute(
                            select(
                                ApiToken.id,
                                ApiToken.name,
                                ApiToken.scope,
                                ApiToken.token_hash,
                                ApiToken.last_used_at,
                                ApiToken.project_ids,
                            ).where(ApiToken.revoked_at.is_(None))
                        )
                    ).all()
            except Exception as exc:
                log.warning("api tokens not read: %s", type(exc).__name__)
                raise TokenLookupError from None
            by_hash: dict[str, _Known] = {}
            for row in rows:
                try:
                    scope = Scope(row.scope)
                except ValueError:
                    continue  # a scope this version does not know grants nothing
                by_hash[row.token_hash] = _Known(
                    row.id,
                    Principal(
                        row.name,
                        scope,
                        None if row.project_ids is None else frozenset(row.project_ids),
                    ),
                    row.last_used_at,
                )
            self._by_hash = by_hash
            self._by_name = {known.principal.name: known for known in by_hash.values()}
            # From when the read started: a revocation committed during the read counts as seen
            # no later than `ttl` after it.
            self._read_at = started

    def _note_use(self, known: _Known) -> None:
        now = utcnow()
        last = self._touched.get(known.id, known.last_used_at)
        if last is not None and now - last < timedelta(seconds=TOUCH_SECONDS):
            return
        self._touched[known.id] = now
        task = asyncio.get_running_loop().create_task(self._touch(known.id, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch(self, token_id: int, now: datetime) -> None:
        try:
            async with self.writer.begin() as session:
                await session.execute(
                    update(ApiToken)
                    .where(
                        ApiToken.id == token_id,
                        or_(
                            ApiToken.last_used_at.is_(None),
                            ApiToken.last_used_at < now - timedelta(seconds=TOUCH_SECONDS),
                        ),
                    )
                    .values(last_used_at=now)
                )
        except Exception as exc:  # a lost "last used" costs nothing but its accuracy
            log.warning("token last use not written: %s", type(exc).__name__)
