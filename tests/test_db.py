"""app/core/db.py on PostgreSQL: pooled connections the server closed are replaced at checkout."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import bindparam, column, literal, select, table, text
from sqlalchemy.engine import make_url

from app.core.db import DriverStatement, create_engine
from tests.conftest import make_settings


async def test_connection_closed_by_the_server_is_replaced_at_checkout(
    database_url: str, redis_url: str
) -> None:
    engine = create_engine(make_settings(database_url, redis_url), pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            first = await connection.scalar(text("SELECT pg_backend_pid()"))

        # The server ends that backend (as a restart or an administrator would).
        url = make_url(database_url)
        admin = await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, database=url.database
        )
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)  # the closed socket reaches the pooled connection

        async with engine.connect() as connection:
            second = await connection.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await engine.dispose()


def test_a_driver_statement_writes_in_its_literal_values_and_refuses_expanding_ones() -> None:
    """A `literal_execute` value (a partial index's) is written into the text the driver gets;
    a parameter whose text depends on its value cannot be compiled once and is refused."""
    deliveries = table("deliveries", column("id"), column("state"))
    pending = literal("pending", literal_execute=True)
    statement = DriverStatement(
        select(deliveries.c.id).where(
            deliveries.c.state == pending, deliveries.c.id > bindparam("after")
        )
    )
    assert "'pending'" in statement.sql
    assert statement.args({"after": 7}) == [7]
    with pytest.raises(ValueError, match="ids"):
        DriverStatement(
            select(deliveries.c.id).where(deliveries.c.id.in_(bindparam("ids", expanding=True)))
        )
