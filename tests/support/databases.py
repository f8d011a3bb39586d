"""Real test databases: a PostgreSQL database per test process (and more for whole stacks)."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from app.core.models import Base
from app.core.settings import DEFAULT_PROJECT_ID

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
TABLES = tuple(table.name for table in Base.metadata.sorted_tables)
"""Every table of the service: what a test's database is emptied of."""
_DATA_TABLES = tuple(table for table in TABLES if table != "projects")
# One row: per table but `projects`, whether it holds a row (names from the models, not input).
_HELD_QUERY = "SELECT " + ", ".join(f"EXISTS (SELECT 1 FROM {t}) AS {t}" for t in _DATA_TABLES)  # noqa: S608


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    # Migration 0010 names its project from SINCH_PROJECT_ID: none here (whatever `.env` holds),
    # so that a test's database has the placeholder project, as `truncate_postgres` leaves it.
    config.attributes["sinch_project_id"] = ""
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _recreate(admin_url: str, name: str, *, template: str | None = None) -> None:
    connection = await asyncpg.connect(_plain(admin_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        copied = f' TEMPLATE "{template}"' if template else ""
        await connection.execute(f'CREATE DATABASE "{name}"{copied}')
    finally:
        await connection.close()


async def _drop(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(_plain(admin_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


# Two checkouts testing at once on one server (git worktrees) set a prefix each.
DATABASE_PREFIX = os.environ.get("TEST_DB_PREFIX", "")


def _url(name: str) -> str:
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


_migrated_template: str | None = None


def _template() -> str:
    """A database migrated to head once per test process, which `create_postgres_database` copies
    (`CREATE DATABASE ... TEMPLATE`: a tenth of a second, where running the migrations takes
    seconds). This process's own (its pid in the name), so no other session is ever connected to
    it while it is copied; `drop_template` drops it (at the end of the test session)."""
    global _migrated_template
    if _migrated_template is None:
        name = f"{DATABASE_PREFIX}sinch_template_{os.getpid()}"
        asyncio.run(_recreate(POSTGRES_ADMIN_URL, name))
        migrate(_url(name))
        _migrated_template = name
    return _migrated_template


# A DROP DATABASE waits for a checkpoint of the whole server (PostgreSQL forces one to forget the
# database's files): about a second on a busy machine, and the test that dropped it had nothing more
# to do with it. The drops run one at a time on a thread of their own while the tests go on; a
# database created again under a name still being dropped waits for that drop first, and the end
# of the session waits for them all (`drop_template`), so every failure is still reported.
_drops = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database-drops")
_dropping: dict[str, Future[None]] = {}


def _dropped(name: str) -> None:
    """Wait until a drop of `name` begun earlier has ended (raising what it raised)."""
    pending = _dropping.pop(name, None)
    if pending is not None:
        pending.result()


def drop_template() -> None:
    """Drop this process's template; first wait for every drop still under way."""
    global _migrated_template
    for name in list(_dropping):
        _dropped(name)
    if _migrated_template is not None:
        asyncio.run(_drop(POSTGRES_ADMIN_URL, _migrated_template))
        _migrated_template = None


def create_postgres_database(name: str, *, migrated: bool = True) -> str:
    """A new, empty (or migrated: a copy of this process's migrated template) PostgreSQL
    database; answers its async URL."""
    name = DATABASE_PREFIX + name
    _dropped(name)
    asyncio.run(_recreate(POSTGRES_ADMIN_URL, name, template=_template() if migrated else None))
    return _url(name)


def drop_postgres_database(name: str) -> None:
    """Drop the database in the background (see `_drops`): nobody may use it any more."""
    name = DATABASE_PREFIX + name
    _dropped(name)
    _dropping[name] = _drops.submit(asyncio.run, _drop(POSTGRES_ADMIN_URL, name))


async def truncate_postgres(url: str) -> None:
    """Empty every table, back to the state migrating an empty database leaves: the placeholder
    project only (migration 0010, run without SINCH_PROJECT_ID), every table's sequence restarted.

    Only the tables holding rows are truncated: a TRUNCATE makes new files for each table it
    names (and those its CASCADE reaches), which took about half a second for all of them on a
    loaded machine, and most tests write to a few tables. The sequences of every table are
    restarted all the same, so an emptied table whose sequence a test moved starts again at 1, as
    `TRUNCATE ... RESTART IDENTITY` of every table left it."""
    connection = await asyncpg.connect(_plain(url))
    try:
        async with connection.transaction():
            held = await connection.fetchrow(_HELD_QUERY)
            assert held is not None
            filled = [table for table in _DATA_TABLES if held[table]]
            if filled:
                await connection.execute(f"TRUNCATE {', '.join(filled)} RESTART IDENTITY CASCADE")
            # Every other table is empty now: deleting the projects checks no reference (no
            # trigger is on `projects`), and is cheaper than truncating it.
            await connection.execute("DELETE FROM projects")
            await connection.execute(
                "SELECT setval(s.seqrelid, s.seqstart, false) FROM pg_sequence s "
                "JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid "
                "AND d.deptype IN ('a', 'i') JOIN pg_class t ON t.oid = d.refobjid "
                "WHERE t.relname = ANY($1::text[])",
                list(TABLES),
            )
            await connection.execute(
                "INSERT INTO projects (id, name, from_settings, created_at, updated_at) "
                "VALUES ($1, $1, true, now(), now())",
                DEFAULT_PROJECT_ID,
            )
    finally:
        await connection.close()
