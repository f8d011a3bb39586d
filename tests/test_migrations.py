"""Migrations run clean both ways on both databases, and agree with the models."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from app.db import create_engine
from app.models import Base
from app.settings import Settings
from tests.support.databases import (
    alembic_config,
    create_postgres_database,
    drop_postgres_database,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path, worker_id: str) -> object:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    name = f"sinch_migrations_{worker_id}_{os.getpid()}"
    yield create_postgres_database(name, migrated=False)
    drop_postgres_database(name)


async def _inspect(url: str) -> tuple[list[str], list[object]]:
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with engine.connect() as connection:

            def read(sync: Connection) -> tuple[list[str], list[object]]:
                tables = sorted(inspect(sync).get_table_names())
                context = MigrationContext.configure(
                    sync, opts={"compare_type": True, "render_as_batch": True}
                )
                return tables, list(compare_metadata(context, Base.metadata))

            return await connection.run_sync(read)
    finally:
        await engine.dispose()


def test_upgrade_downgrade_upgrade_and_models_agree(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)

    command.upgrade(config, "head")
    command.downgrade(config, "base")
    tables, _ = asyncio.run(_inspect(empty_database_url))
    assert tables == ["alembic_version"]

    command.upgrade(config, "head")
    tables, differences = asyncio.run(_inspect(empty_database_url))
    assert set(Base.metadata.tables) <= set(tables)
    assert differences == [], f"models and migrations disagree: {differences}"
