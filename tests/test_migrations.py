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
    # What alembic's comparison does not look at: each index's method and whether it is partial.
    definitions = asyncio.run(_index_definitions(empty_database_url))
    for table in Base.metadata.tables.values():
        for index in table.indexes:
            definition = definitions[index.name]
            using = index.dialect_options["postgresql"]["using"] or "btree"
            assert f" USING {using} (" in definition, definition
            partial = index.dialect_options["postgresql"]["where"] is not None
            assert (" WHERE " in definition) == partial, definition
    assert "ix_deliveries_pending_next_attempt_at" not in definitions  # dropped by 0019


async def _index_definitions(url: str) -> dict[str, str]:
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
            )
            return {name: definition for name, definition in rows}
    finally:
        await engine.dispose()


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


# --- 0010: projects ---------------------------------------------------------------------------

_PROJECT_TABLES = (
    "registrations",
    "callback_events",
    "registration_history",
    "registration_changes",
    "deliveries",
    "callback_secrets",
    "sync_state",
    "count_deltas",
    "count_totals",
)
"""Every table whose rows all belong to a project after 0010 (audit_log: some)."""

_SEED_BEFORE_PROJECTS = [
    "INSERT INTO registrations (id, status, created_at, updated_at) VALUES "
    "('r-1', 'APPROVED', now(), now())",
    "INSERT INTO callback_events (dedup_key, registration_id, body, headers, secret_index, "
    "received_at, state, processed_at) VALUES "
    "('k-1', 'r-1', '\\x7b7d', '{}', 0, now(), 'processed', now())",
    # A fold: what was counted so far moves into the totals.
    "INSERT INTO count_totals (name, value) SELECT name, sum(delta) FROM count_deltas "
    "GROUP BY name",
    "DELETE FROM count_deltas",
    "INSERT INTO registrations (id, status, created_at, updated_at) VALUES "
    "('r-2', 'PENDING', now(), now())",
    "INSERT INTO callback_events (dedup_key, registration_id, body, headers, secret_index, "
    "received_at, state) VALUES ('k-2', 'r-2', '\\x7b7d', '{}', 0, now(), 'received')",
    "INSERT INTO registration_history (registration_id, to_status, at, source, recorded_at) "
    "VALUES ('r-1', 'APPROVED', now(), 'callback', now())",
    "INSERT INTO registration_changes (registration_id, kind, status, at, source, recorded_at, "
    "created_at, updated_at, sender_ids, tags) VALUES "
    "('r-1', 'status', 'APPROVED', now(), 'callback', now(), now(), now(), '[]', '[]')",
    "INSERT INTO subscriptions (id, url, enabled, secret, created_at, updated_at) VALUES "
    "('sub-1', 'https://example.com/hook', true, 'whsec_x', now(), now())",
    "INSERT INTO deliveries (subscription_id, change_id, registration_id, state, created_at, "
    "updated_at) SELECT 'sub-1', id, registration_id, 'pending', now(), now() "
    "FROM registration_changes",
    "INSERT INTO audit_log (at, actor, action, target) VALUES "
    "(now(), 'env:1', 'registration.refresh', 'r-1'), (now(), 'cli:me', 'token.create', 'ops')",
    "INSERT INTO callback_secrets (secret, state, created_at, updated_at) VALUES "
    "('s3cret-current', 'current', now(), now())",
    "INSERT INTO sync_state (name, value, updated_at) VALUES ('reconcile', now(), now())",
]
"""Rows of every kind as revision 0009 kept them (a fold having run, later deltas left)."""


async def _execute(url: str, statements: list[str]) -> None:
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _owners(url: str) -> dict[str, set[str | None]]:
    """Each project table's distinct `project_id`s, and the projects' (id, from_settings)."""
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with engine.connect() as connection:
            owners: dict[str, set[str | None]] = {}
            for table in _PROJECT_TABLES:  # the tables' names are this module's own
                query = text(f"SELECT DISTINCT project_id FROM {table}")  # noqa: S608
                owners[table] = set((await connection.execute(query)).scalars().all())
            audit = await connection.execute(
                text("SELECT target, project_id FROM audit_log ORDER BY id")
            )
            owners["audit_log"] = {f"{target}:{project}" for target, project in audit}
            projects = await connection.execute(text("SELECT id, from_settings FROM projects"))
            owners["projects"] = {f"{pid}:{flag}" for pid, flag in projects}
            return owners
    finally:
        await engine.dispose()


async def _counts_agree(url: str, project_id: str) -> None:
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        sessions = create_sessionmaker(engine)
        now = datetime.now(UTC)
        expected = await truth(sessions, now)
        assert expected["registrations"] == {"APPROVED": 1, "PENDING": 1}
        assert await shown(sessions, now) == expected
        async with sessions() as session:
            of_project = await counts.read(session, now, projects=frozenset({project_id}))
            of_other = await counts.read(session, now, projects=frozenset({"another"}))
        assert of_project.registrations_by_status == {"APPROVED": 1, "PENDING": 1}
        assert of_project.events_by_state["received"] == 1
        assert of_other.registrations_total == 0 and of_other.events_total == 0
    finally:
        await engine.dispose()


def test_the_projects_migration_gives_every_row_to_sinch_project_id(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0009")
    asyncio.run(_execute(empty_database_url, _SEED_BEFORE_PROJECTS))
    config.attributes["sinch_project_id"] = "proj-a"
    command.upgrade(config, "head")

    owners = asyncio.run(_owners(empty_database_url))
    assert owners.pop("projects") == {"proj-a:True"}
    # The audit entry about a registration is its project's; a token's is the deployment's.
    assert owners.pop("audit_log") == {"r-1:proj-a", "ops:None"}
    assert owners == {table: {"proj-a"} for table in _PROJECT_TABLES}
    asyncio.run(_counts_agree(empty_database_url, "proj-a"))

    # Back to 0009: the columns go, the counts stay right, and the triggers count new rows again.
    command.downgrade(config, "0009")
    asyncio.run(
        _execute(
            empty_database_url,
            [
                "INSERT INTO registrations (id, status, created_at, updated_at) VALUES "
                "('r-3', 'APPROVED', now(), now())"
            ],
        )
    )
    tables, _ = asyncio.run(_inspect(empty_database_url))
    assert "projects" not in tables
    command.upgrade(config, "head")
    owners = asyncio.run(_owners(empty_database_url))
    assert owners["registrations"] == {"proj-a"}


async def _settle(url: str, sinch_project_id: str) -> None:
    from app.projects.service import ensure_settings_project

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=url, sinch_project_id=sinch_project_id, sinch_key_id="key-b"
    )
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine).begin() as session:
            assert await ensure_settings_project(session, settings, datetime.now(UTC)) == (
                sinch_project_id
            )
    finally:
        await engine.dispose()


def test_the_placeholder_project_becomes_sinch_project_id_at_start(
    empty_database_url: str,
) -> None:
    """Migrated without SINCH_PROJECT_ID: the rows are the placeholder's until a start with it
    set renames the placeholder, and every row (counts and marks too) follows."""
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0009")
    asyncio.run(_execute(empty_database_url, _SEED_BEFORE_PROJECTS))
    command.upgrade(config, "head")
    assert asyncio.run(_owners(empty_database_url))["registrations"] == {"default"}

    asyncio.run(_settle(empty_database_url, "proj-b"))
    owners = asyncio.run(_owners(empty_database_url))
    assert owners.pop("projects") == {"proj-b:True"}
    assert owners.pop("audit_log") == {"r-1:proj-b", "ops:None"}
    assert owners == {table: {"proj-b"} for table in _PROJECT_TABLES}
    asyncio.run(_counts_agree(empty_database_url, "proj-b"))

    # Named otherwise later: the old project keeps its rows and is no longer the settings' one.
    asyncio.run(_settle(empty_database_url, "proj-c"))
    owners = asyncio.run(_owners(empty_database_url))
    assert owners["projects"] == {"proj-b:False", "proj-c:True"}
    assert owners["registrations"] == {"proj-b"}
    # Two projects: going below 0010 would mix their rows, so it is refused.
    with pytest.raises(RuntimeError, match="2 projects exist"):
        command.downgrade(config, "0009")


async def _versions(url: str) -> list[tuple[Any, ...]]:
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT registration_id, version, project_id, document, digest, source "
                    "FROM registration_versions ORDER BY registration_id, version"
                )
            )
            return [tuple(row) for row in rows]
    finally:
        await engine.dispose()


def test_the_versions_migration_keeps_each_held_document_as_version_1(
    empty_database_url: str,
) -> None:
    from app.catalog.diff import digest

    config = alembic_config(empty_database_url)
    command.upgrade(config, "0017")
    document = {"id": "r-1", "status": "PENDING", "tags": ["#a"]}
    asyncio.run(
        _execute(
            empty_database_url,
            [
                "INSERT INTO projects (id, name, from_settings, created_at, updated_at) VALUES "
                "('proj-a', 'A', true, now(), now())",
                "INSERT INTO registrations (id, project_id, status, sinch, last_synced_at, "
                "created_at, updated_at) VALUES ('r-1', 'proj-a', 'PENDING', "
                """'{"id": "r-1", "status": "PENDING", "tags": ["#a"]}', now(), now(), now())""",
                # Known from a callback only: no document, no version.
                "INSERT INTO registrations (id, project_id, status, created_at, updated_at) "
                "VALUES ('r-2', 'proj-a', 'IN_QUEUE', now(), now())",
            ],
        )
    )

    command.upgrade(config, "0018")

    assert asyncio.run(_versions(empty_database_url)) == [
        ("r-1", 1, "proj-a", document, digest(document), "migration")
    ]
    command.downgrade(config, "0017")
    tables, _ = asyncio.run(_inspect(empty_database_url))
    assert "registration_versions" not in tables
    assert "registrations" in tables
    command.upgrade(config, "head")
    assert [row[:2] for row in asyncio.run(_versions(empty_database_url))] == [("r-1", 1)]
