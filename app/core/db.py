"""Engine and session factories, and the column types both databases share.

SQLite is the embedded default and PostgreSQL the production database; everything here keeps the
two behaving alike: times are always timezone-aware UTC, and on SQLite every transaction starts
with `BEGIN IMMEDIATE`, so a transaction holds the writer lock from its first statement (SQLite's
stand-in for PostgreSQL's row locks) and waits for it instead of failing half-way.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import DateTime, Table, event
from sqlalchemy.dialects import postgresql, sqlite
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

SQLITE_BUSY_TIMEOUT_MS = 30_000


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both databases.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so the value is stored as naive UTC
    (whose text form sorts in time order) and given back its UTC offset when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC: the one clock the storage layer uses."""
    return datetime.now(UTC)


def create_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """Build the async engine for `settings.database_url`.

    For SQLite, the file's folder is created, WAL mode lets readers run beside the writer, and
    `synchronous=FULL` keeps a commit durable across a power cut (the callback endpoint promises
    that an answered event is on disk).
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("connect_args", {"timeout": 5, "command_timeout": 30})
        pg_engine = create_async_engine(url, **kwargs)
        event.listen(pg_engine.sync_engine, "checkout", _refuse_closed_connection)
        return pg_engine

    path = settings.sqlite_path()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that `_on_begin` decides how a
        # transaction starts (SQLAlchemy's documented recipe for pysqlite/aiosqlite).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

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
    """Sessions for one-query reads. On PostgreSQL they run in autocommit, on the same pool: a
    read then costs one round trip instead of BEGIN, query, ROLLBACK. (On SQLite a read in WAL
    mode needs no such help, and every transaction must keep its `BEGIN IMMEDIATE`.)"""
    if engine.dialect.name != "postgresql":
        return create_sessionmaker(engine)
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


def insert_for(dialect_name: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT for `table` in the dialect's own form (both offer ON CONFLICT)."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect_name!r}")


class DriverStatement:
    """A Core statement compiled once for asyncpg, to run on a driver connection directly.

    The PostgreSQL fast paths (the worker's lock-free step) run the very statements the general
    path runs through SQLAlchemy, not a hand-written copy: what differs is only who sends them.
    Values a statement binds itself (an enum's value, a literal) travel as parameters too, as
    SQLAlchemy sends them. Column types' own conversions are not applied: pass values asyncpg
    takes as they are (aware datetimes, str, int).
    """

    def __init__(self, statement: ClauseElement) -> None:
        dialect: Dialect = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = compiled.string
        self._names = tuple(compiled.positiontup or ())
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


def rowcount(result: Any) -> int:
    """The rows an UPDATE or DELETE run through SQLAlchemy touched (its `CursorResult`)."""
    return int(result.rowcount or 0)


def changed_rows(status: str) -> int:
    """The row count of an asyncpg command status (`UPDATE 3` -> 3, `INSERT 0 1` -> 1)."""
    return int(status.rsplit(" ", 1)[-1])


async def driver_connection(connection: AsyncConnection) -> Any:
    """The DBAPI driver's own connection under `connection` (asyncpg's, on PostgreSQL)."""
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
    """Whether both databases can keep `value` as text: no NUL (PostgreSQL refuses it in text) and
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
