"""Migrations run clean both ways, and agree with the models."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, Connection, bindparam, inspect, select, text

from app.core.db import UTCDateTime, create_engine, create_sessionmaker
from app.core.models import Base, Registration
from app.core.settings import Settings
from app.counts import service as counts
from tests.support.counts import shown, truth
from tests.support.databases import (
    alembic_config,
    create_postgres_database,
    drop_postgres_database,
)

T_ENTERED = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
T_CHANGED = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def empty_database_url(worker_id: str) -> object:
    name = f"sinch_migrations_{worker_id}_{os.getpid()}"
    yield create_postgres_database(name, migrated=False)
    drop_postgres_database(name)


async def _inspect(url: str) -> tuple[list[str], list[object]]:
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with engine.connect() as connection:

            def read(sync: Connection) -> tuple[list[str], list[object]]:
                tables = sorted(inspect(sync).get_table_names())
                context = MigrationContext.configure(sync, opts={"compare_type": True})
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


async def _seed_before_facts(url: str) -> None:
    """Registrations as revision 0004 kept them: a document and a history, no facts."""
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    rows = []
    for number in range(1203):  # more than two batches of the backfill
        doc = {
            "id": f"reg-{number:04d}",
            "status": "PENDING",
            "policyId": "pol-se",
            "tags": ["#a", f"#n{number % 3}"],
            "requestDetails": [
                {"senderIdDetails": [{"senderId": f"S{number}"}, {"senderId": "X"}]}
            ],
            "logs": [{"createTime": "2026-01-02T10:00:00", "message": "Upload the letter"}],
            "etaDate": "2026-03-01",
        }
        if number % 2:
            doc["marketCode"] = "SE"
        rows.append(doc)
    try:
        async with engine.begin() as connection:
            for doc in rows:
                await connection.execute(
                    text(
                        "INSERT INTO registrations (id, status, registration_type, "
                        "status_changed_at, last_synced_at, sinch, created_at, updated_at) VALUES "
                        "(:id, 'PENDING', 'ALPHANUMERIC_SENDER_ID', :at, :at, :doc, :at, :at)"
                    ).bindparams(
                        bindparam("doc", type_=JSON()), bindparam("at", type_=UTCDateTime())
                    ),
                    {"id": doc["id"], "doc": doc, "at": T_CHANGED},
                )
                await connection.execute(
                    text(
                        "INSERT INTO registration_history (registration_id, from_status, "
                        "to_status, at, source, recorded_at) VALUES "
                        "(:id, 'IN_QUEUE', 'PENDING', :at, 'callback', :at)"
                    ).bindparams(bindparam("at", type_=UTCDateTime())),
                    {"id": doc["id"], "at": T_ENTERED},
                )
    finally:
        await engine.dispose()


async def _read_facts(url: str) -> tuple[list[Any], int, int]:
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with engine.connect() as connection:
            facts = (
                await connection.execute(
                    select(
                        Registration.id,
                        Registration.sender_ids,
                        Registration.tags,
                        Registration.market_code,
                        Registration.policy_id,
                        Registration.eta_date,
                        Registration.status_since,
                        Registration.reason_message,
                    ).order_by(Registration.id)
                )
            ).all()
            senders = (
                await connection.execute(text("SELECT count(*) FROM registration_sender_ids"))
            ).scalar_one()
            tags = (
                await connection.execute(text("SELECT count(*) FROM registration_tags"))
            ).scalar_one()
            return list(facts), senders, tags
    finally:
        await engine.dispose()


def test_the_facts_migration_fills_the_facts_of_registrations_kept_before(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0004")
    asyncio.run(_seed_before_facts(empty_database_url))
    command.upgrade(config, "head")

    facts, senders, tags = asyncio.run(_read_facts(empty_database_url))
    assert len(facts) == 1203
    assert (senders, tags) == (1203 * 2, 1203 * 2)
    first, second = facts[0], facts[1]
    assert first.sender_ids == ["S0", "X"]
    assert first.tags == ["#a", "#n0"]
    assert (first.market_code, second.market_code) == (None, "SE")  # the map fills the rest later
    assert first.policy_id == "pol-se"
    assert first.eta_date == date(2026, 3, 1)
    assert first.status_since == T_ENTERED  # from the history
    assert first.reason_message == "Upload the letter"
    assert all(row.reason_message == "Upload the letter" for row in facts)


async def _seed_before_counts(url: str) -> None:
    """Events and registrations as revision 0007 kept them, before anything counted them."""
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        async with engine.begin() as connection:
            for number in range(30):
                received = now - timedelta(minutes=7 * number)
                finished = received + timedelta(milliseconds=250 * number)
                state = ("received", "processed", "failed", "invalid")[number % 4]
                await connection.execute(
                    text(
                        "INSERT INTO callback_events (dedup_key, body, headers, secret_index, "
                        "received_at, duplicate_count, state, attempts, processed_at) VALUES "
                        "(:key, :body, '{}', 0, :received, 0, :state, 1, :finished)"
                    ).bindparams(
                        bindparam("received", type_=UTCDateTime()),
                        bindparam("finished", type_=UTCDateTime()),
                    ),
                    {
                        "key": f"k-{number}",
                        "body": b"{}",
                        "received": received,
                        "state": state,
                        "finished": None if state == "received" else finished,
                    },
                )
            for number in range(7):
                await connection.execute(
                    text(
                        "INSERT INTO registrations (id, status, created_at, updated_at) VALUES "
                        "(:id, :status, :at, :at)"
                    ).bindparams(bindparam("at", type_=UTCDateTime())),
                    {"id": f"r-{number}", "status": ("APPROVED", "PENDING")[number % 2], "at": now},
                )
    finally:
        await engine.dispose()


def test_the_counts_migration_counts_the_rows_kept_before(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0007")
    asyncio.run(_seed_before_counts(empty_database_url))
    command.upgrade(config, "head")

    async def compare() -> None:
        engine = create_engine(
            Settings(_env_file=None, database_url=empty_database_url)  # type: ignore[call-arg]
        )
        try:
            sessions = create_sessionmaker(engine)
            now = datetime.now(UTC)
            expected = await truth(sessions, now)
            assert await shown(sessions, now) == expected
            assert expected["registrations"] == {"APPROVED": 4, "PENDING": 3}
            assert sum(h[0] for h in expected["hours"]) == 30  # type: ignore[attr-defined]
            await counts.fold(sessions, now)
            assert await shown(sessions, now) == expected
        finally:
            await engine.dispose()

    asyncio.run(compare())
