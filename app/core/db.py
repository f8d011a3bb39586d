"""Engine and session factories, the column type for times, and the few helpers that send
statements to asyncpg directly. PostgreSQL (through asyncpg) is the only database; times are always
timezone-aware UTC.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import DateTime, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import TypeDecorator

from app.core.settings import Settings


class UTCDateTime(TypeDecorator[datetime]):
    """A `timestamptz` that takes and gives only aware datetimes, in UTC.

    A naive datetime is refused rather than guessed at (it may be a local time); values read back
    are in UTC whatever the session's time zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC: the one clock the storage layer uses."""
    return datetime.now(UTC)


def create_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """Build the async engine for `settings.database_url` (PostgreSQL through asyncpg)."""
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("connect_args", {"timeout": 5, "command_timeout": 30})
    engine = create_async_engine(make_url(settings.database_url), **kwargs)
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """At checkout, replace a pooled connection that the server has closed (a restart, an outage).

    asyncpg notices a closed socket by itself, so this costs no round trip, unlike SQLAlchemy's
    `pool_pre_ping`, which on asyncpg is three (BEGIN, a query, ROLLBACK) per checkout: more than
    a read of the internal API itself. Raising `DisconnectionError` makes the pool retry with a
    new connection (SQLAlchemy's documented pessimistic disconnect handling). A connection that
    died without the server closing it is found by the first statement that uses it.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (routes read them to answer)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def create_reader(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for one-query reads, in autocommit on the same pool: a read then costs one round
    trip instead of BEGIN, query, ROLLBACK."""
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


class DriverStatement:
    """A Core statement compiled once for asyncpg, to run on a driver connection directly.

    The PostgreSQL fast paths (the worker's lock-free step) run the very statements the general
    path runs through SQLAlchemy, not a hand-written copy: what differs is only who sends them.
    Values a statement binds itself (an enum's value, a literal) travel as parameters too, as
    SQLAlchemy sends them; a `literal_execute` one is written into the text, as SQLAlchemy
    writes it. Column types' own conversions are not applied: pass values asyncpg
    takes as they are (aware datetimes, str, int).
    """

    def __init__(self, statement: ClauseElement) -> None:
        dialect: Dialect = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        for name, bind in compiled.binds.items():
            # Their text depends on the values: one text for all runs cannot hold them.
            if bind.expanding or (bind.literal_execute and bind.required):
                raise ValueError(f"{name}: an expanding or value-less literal parameter")
        # A `literal_execute` value (the pending deliveries' 'pending', which a partial index
        # needs in the text) is written in; the other parameters stay placeholders (the None
        # given for them here is never written).
        unbound = {name: None for name, bind in compiled.binds.items() if bind.required}
        expanded = compiled.construct_expanded_state(unbound)
        self.sql = expanded.statement
        self._names = tuple(expanded.positiontup or ())
        self._bound = dict(compiled.params)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for `params` (by name), in the statement's order."""
        return [params[name] if name in params else self._bound[name] for name in self._names]

    async def execute(self, driver: Any, params: Mapping[str, Any]) -> str:
        """Run it on asyncpg connection `driver`; answers the command status (`UPDATE 1`)."""
        status: str = await driver.execute(self.sql, *self.args(params))
        return status

    async def fetchrow(self, driver: Any, params: Mapping[str, Any]) -> Any:
        return await driver.fetchrow(self.sql, *self.args(params))

    async def fetch(self, driver: Any, params: Mapping[str, Any]) -> list[Any]:
        rows: list[Any] = await driver.fetch(self.sql, *self.args(params))
        return rows


def rowcount(result: Any) -> int:
    """The rows an UPDATE or DELETE run through SQLAlchemy touched (its `CursorResult`)."""
    return int(result.rowcount or 0)


def changed_rows(status: str) -> int:
    """The row count of an asyncpg command status (`UPDATE 3` -> 3, `INSERT 0 1` -> 1)."""
    return int(status.rsplit(" ", 1)[-1])


async def driver_connection(connection: AsyncConnection) -> Any:
    """The DBAPI driver's own connection under `connection` (asyncpg's)."""
    raw = await connection.get_raw_connection()
    return raw.driver_connection


class DriverConnections:
    """asyncpg connections kept out of the engine's pool between uses, lent one use at a time.

    For the few hot statements written for asyncpg directly (the callback inbox, the worker's
    lock-free step); they run outside any SQLAlchemy transaction, so each statement commits on its
    own. Checking a connection out of SQLAlchemy's pool and back costs about as much CPU as such a
    statement (greenlet switches, pool events, the reset on return), so up to `keep`
    idle connections are kept here instead; more are returned to the pool. A connection the server
    closed (a restart, an outage) is noticed without a round trip (asyncpg's `is_closed()`) and
    replaced; one whose use raised is dropped, as its state is unknown.
    """

    def __init__(self, engine: AsyncEngine, *, keep: int) -> None:
        self._engine = engine
        self._keep = keep
        self._idle: list[tuple[AsyncConnection, Any]] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """Lend an asyncpg connection for one use."""
        connection, driver = await self._take()
        try:
            yield driver
        except BaseException:
            await _drop(connection)
            raise
        if len(self._idle) < self._keep:
            self._idle.append((connection, driver))
        else:
            await connection.close()

    async def _take(self) -> tuple[AsyncConnection, Any]:
        while self._idle:
            connection, driver = self._idle.pop()
            if not driver.is_closed():
                return connection, driver
            await _drop(connection)
        connection = await self._engine.connect()
        try:
            return connection, await driver_connection(connection)
        except BaseException:
            await connection.close()
            raise

    async def close(self) -> None:
        """Give the idle connections back to the pool."""
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            with contextlib.suppress(Exception):
                await connection.close()


async def _drop(connection: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()


def is_storable_text(value: str) -> bool:
    """Whether the database can keep `value` as text: no NUL (PostgreSQL refuses it in text) and
    no lone surrogate (JSON can spell one, `\\ud800`, but no UTF-8 encoder accepts it).

    Text that fails this is treated as absent wherever it is read (an event's ids:
    app/events/parsing.py; a registration's facts: app/registrations/facts.py).
    """
    if value.isascii():  # the usual case, and then only NUL can be wrong
        return "\x00" not in value
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
