"""The deliveries' due look-ups use the partial indexes of the PENDING deliveries (migration 0017):
a success leaves those indexes, so they stay small and a success writes fewer index entries. A
query whose predicate PostgreSQL cannot match to the index's (`state = 'pending'` bound as a
parameter, say) cannot use it: with sequential scans off, the plan must name the index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import DriverStatement, create_engine, driver_connection
from app.core.settings import Settings
from app.subscriptions import repository

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def every_delivery(state: str, next_attempt_at: str, where: str = "TRUE", attempts: int = 0) -> str:
    """An INSERT of a delivery of each change `c` to each subscription `s` where `where` holds,
    `state` and `next_attempt_at` SQL over them."""
    # This module's own SQL fragments, no outside input.
    return (
        "INSERT INTO deliveries (subscription_id, change_id, registration_id, project_id, state,"  # noqa: S608
        " attempts, next_attempt_at, created_at, updated_at)"
        f" SELECT s.id, c.id, c.registration_id, 'plans', {state}, {attempts}, {next_attempt_at},"
        f" now(), now() FROM registration_changes c CROSS JOIN subscriptions s WHERE {where}"
    )


FILL = [
    "INSERT INTO projects (id, name, from_settings, created_at, updated_at)"
    " VALUES ('plans', 'plans', false, now(), now()) ON CONFLICT DO NOTHING",
    "INSERT INTO subscriptions (id, url, enabled, secret, created_at, updated_at)"
    " SELECT 'sub_' || n, 'https://example.com/' || n, true, 'whsec_x', now(), now()"
    " FROM generate_series(1, 5) n",
    "INSERT INTO registration_changes (registration_id, kind, status, at, source, recorded_at,"
    " created_at, updated_at, sender_ids, tags, project_id, seq)"
    " SELECT 'reg-' || (n % 300), 'status', 'IN_PROGRESS', now(), 'callback', now(), now(),"
    " now(), '[]', '[]', 'plans', n FROM generate_series(1, 4000) n",
    # Most deliveries succeeded long ago; the newest few of each subscription are pending.
    every_delivery(
        "CASE WHEN c.seq > 3950 THEN 'pending' ELSE 'succeeded' END",
        "CASE WHEN c.seq > 3950"
        " THEN CAST(:now AS timestamptz) - interval '1 second' * (c.seq % 7) END",
    ),
    "ANALYZE deliveries",
    "ANALYZE subscriptions",
    "ANALYZE registration_changes",
]


async def fill(connection: AsyncConnection, statements: list[str], **values: Any) -> None:
    for statement in statements:
        names = {
            name: value for name, value in {"now": NOW, **values}.items() if f":{name}" in statement
        }
        await connection.execute(text(statement), names)


def assert_reads_pending_indexes(explained: str) -> None:
    """Every scan of deliveries in the plan `explained` is one of a pending deliveries' index (a
    bitmap heap scan's rows come from its index scan, the line below it)."""
    reads = [
        line
        for line in explained.splitlines()
        if (" on deliveries" in line or "Scan on ix_deliveries" in line)
        and "Bitmap Heap Scan" not in line
    ]
    assert reads, explained
    for read in reads:
        assert "ix_deliveries_pending_" in read, explained


async def plan(connection: AsyncConnection, statement: Select[*tuple[Any, ...]]) -> str:
    sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    rows = await connection.execute(text(f"EXPLAIN {sql}"))
    return "\n".join(row[0] for row in rows)


async def test_the_due_look_ups_use_the_pending_deliveries_indexes(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await fill(connection, FILL)
            await connection.execute(text("SET LOCAL enable_seqscan = off"))
            statements = (
                repository.dispatch_statement(NOW, ["sub_2"]),
                repository.next_due_statement(NOW - timedelta(seconds=3)),
                repository.DUE.params(subscription_id="sub_1", now=NOW, limit=32, flying=[0]),
                repository.DUE_AMONG_FIRST.params(
                    subscription_id="sub_1", now=NOW, limit=32, flying=[0]
                ),
            )
            for statement in statements:
                assert_reads_pending_indexes(await plan(connection, statement))
    finally:
        await engine.dispose()


BACKLOG = [
    *FILL[:3],
    # sub_1 fell behind: 2,000 deliveries pending and due, over 300 registrations, the statistics
    # fresh (autovacuum analyzes a table this busy every few seconds).
    every_delivery(
        "CASE WHEN c.seq > 2000 AND s.id = 'sub_1' THEN 'pending' ELSE 'succeeded' END",
        "CASE WHEN c.seq > 2000 AND s.id = 'sub_1' THEN CAST(:now AS timestamptz) END",
    ),
    *FILL[4:],
]


async def test_a_backlog_costs_the_due_read_its_window_not_its_length(
    settings: Settings,
) -> None:
    """While the front of a subscriber's backlog is sendable, `due` reads and probes at most
    `WINDOW` pending deliveries, not all of them. PostgreSQL's own plan probed every one, then
    sorted (9 ms at 900 pending in bench.worker, and slower reads made the backlog longer); a
    window read from the index of every pending delivery by next attempt read them all and
    sorted them (migration 0019)."""
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await fill(connection, BACKLOG)
            statement = repository.DUE_AMONG_FIRST.params(
                subscription_id="sub_1", now=NOW, limit=32, flying=[0]
            )
            sql = statement.compile(
                dialect=connection.dialect, compile_kwargs={"literal_binds": True}
            )
            rows = await connection.execute(text(f"EXPLAIN ANALYZE {sql}"))
            explained = "\n".join(row[0] for row in rows)
            lines = explained.splitlines()
            probes = [
                int(line.rsplit("loops=", 1)[1].rstrip(")"))
                for line in lines
                if "on deliveries deliveries_1" in line and "loops=" in line
            ]
            assert probes and max(probes) <= repository.WINDOW, explained
            # The window itself reads WINDOW rows of the pending index, not the whole backlog
            # sorted (which cost 4-8 ms a cycle at 2,800 behind).
            window = [
                int(line.split("rows=")[-1].split()[0])
                for line in lines
                if "on deliveries " in line and "actual " in line
            ]
            assert window and max(window) <= repository.WINDOW, explained
        async with engine.connect() as connection:
            driver = await driver_connection(connection)
            batch = await repository.due(driver, "sub_1", now=NOW, limit=32)
        changes = [delivery.change().seq for delivery in batch]
        assert changes == list(range(2001, 2033))  # the first 32, one per registration
    finally:
        await engine.dispose()


def literal(value: Any) -> str:
    """`value` as an SQL literal of the few kinds these statements take."""
    if isinstance(value, list):
        return "'{" + ",".join(str(item) for item in value) + "}'"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def generic_plan(
    connection: AsyncConnection, statement: DriverStatement, values: dict[str, Any]
) -> str:
    """The plan PostgreSQL keeps for `statement` prepared (as asyncpg prepares the sender's
    statements): the generic one, made without the values."""
    await connection.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    await connection.execute(text(f"PREPARE kept AS {statement.sql}"))
    arguments = ", ".join(literal(value) for value in statement.args(values))
    rows = await connection.execute(text(f"EXPLAIN EXECUTE kept({arguments})"))
    await connection.execute(text("DEALLOCATE kept"))
    return "\n".join(row[0] for row in rows)


async def test_a_subscription_with_nothing_pending_reads_no_delivered_one(
    settings: Settings,
) -> None:
    """The plans PostgreSQL keeps for the sender's due reads (prepared, made without values)
    read the pending deliveries' indexes only, with statistics taken when the table was a tenth
    of its size and a tenth pending, and nothing pending now: in bench.worker, ordered by change
    alone, such a kept plan walked the index of every delivery's change (44 ms at 51k, none
    pending). This data does not bring that plan back with the old order; it guards the indexes
    the kept plans must use.
    """
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            # The statistics were taken while a tenth was pending (as in a busy minute); since,
            # every one was delivered.
            await fill(
                connection,
                [
                    *FILL[:3],
                    # Analyzed at 2,000 deliveries, a tenth pending; then 10 times as many.
                    every_delivery(
                        "CASE WHEN c.seq % 10 = 0 THEN 'pending' ELSE 'succeeded' END",
                        "CAST(:now AS timestamptz)",
                        "c.seq <= 400",
                    ),
                    *FILL[4:],
                    every_delivery("'succeeded'", "NULL", "c.seq > 400", attempts=1),
                    "UPDATE deliveries SET state = 'succeeded', next_attempt_at = NULL",
                ],
            )
            values = {"subscription_id": "sub_1", "now": NOW, "limit": 32, "flying": [0]}
            for statement in (repository._DUE_AMONG_FIRST, repository._DUE):
                assert_reads_pending_indexes(await generic_plan(connection, statement, values))
    finally:
        await engine.dispose()


async def test_a_front_blocked_by_retries_holds_back_no_other_registration(
    settings: Settings,
) -> None:
    """When the first `WINDOW` pending deliveries hold nothing to send (here one registration's
    changes behind a delivery waiting for its retry), `due` looks at them all and finds the
    registration that can go."""
    blocked = repository.WINDOW + 1
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await fill(
                connection,
                [
                    *FILL[:2],
                    "INSERT INTO registration_changes (registration_id, kind, status, at, source,"
                    " recorded_at, created_at, updated_at, sender_ids, tags, project_id, seq)"
                    " SELECT CASE WHEN n <= :blocked THEN 'reg-stuck' ELSE 'reg-free' END,"
                    " 'status', 'IN_PROGRESS', now(), 'callback', now(), now(), now(), '[]', '[]',"
                    " 'plans', n FROM generate_series(1, :blocked + 1) n",
                    # The stuck registration's first delivery waits an hour for its retry.
                    every_delivery(
                        "'pending'",
                        "CASE WHEN c.seq = 1 THEN CAST(:now AS timestamptz) + interval '1 hour'"
                        " ELSE CAST(:now AS timestamptz) END",
                        "s.id = 'sub_1'",
                    ),
                ],
                blocked=blocked,
            )
        async with engine.connect() as connection:
            driver = await driver_connection(connection)
            batch = await repository.due(driver, "sub_1", now=NOW, limit=32)
        assert [(d.registration_id, d.change().seq) for d in batch] == [("reg-free", blocked + 1)]
    finally:
        await engine.dispose()
