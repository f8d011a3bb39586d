"""On PostgreSQL, the internal API's reads use an index, never a sequential scan.

The SQL EXPLAINed is the routes' own: the statement builders of the queries modules, compiled for
the connection's dialect with the values inlined. The tables hold enough rows (100,000
registrations, as many as the issue of the registration facts names, and statistics, by ANALYZE)
for the planner to prefer a sequential scan where no index fits.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Select, insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.db import create_engine
from app.core.models import (
    CallbackEvent,
    EventState,
    Project,
    Registration,
    RegistrationForecast,
    RegistrationHistory,
    RegistrationSenderId,
    RegistrationTag,
)
from app.core.settings import DEFAULT_PROJECT_ID, Settings
from app.events import queries as event_queries
from app.events.queries import EventFilters
from app.registrations import queries as registration_queries
from app.registrations.queries import RegistrationFilters
from tests.support.databases import create_postgres_database, drop_postgres_database

REGISTRATIONS = 100_000
EVENTS = 20_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# On one test process: each fills its own database with the 100,000 rows the plans need (about
# 30 s), so spreading the module over processes filled it once per process.
pytestmark = pytest.mark.xdist_group("query_plans")

TYPES = ("ALPHANUMERIC_SENDER_ID", "LONG_NUMBER", "SHORT_CODE", "RCS_AGENT")
STATUSES = ("IN_QUEUE", "IN_PROGRESS", "APPROVED", "REJECTED", "PENDING", "ON_HOLD")
# As in production: nearly every event is processed; the ones people look for are rare.
STATE_WEIGHTS = {
    EventState.PROCESSED: 94,
    EventState.RECEIVED: 3,
    EventState.FAILED: 2,
    EventState.INVALID: 1,
}
PROJECT_IDS = (DEFAULT_PROJECT_ID, *(f"project-{n}" for n in range(1, 10)))
"""The rows are spread over ten projects, as a deployment serving several would hold them."""
ONE_PROJECT = frozenset({"project-3"})
TWO_PROJECTS = frozenset({"project-3", "project-7"})
LIMIT = 51  # what the routes ask for with the default limit of 50
MARKETS = ("GB", "SE", "DE", "FR", "US", "NL", "ES", "IT", "NO", "DK", "FI", "PL")
TAGS = tuple(f"#team-{n}" for n in range(40))


@pytest.fixture(scope="session")
def postgres_url(worker_id: str) -> Iterator[str]:
    """A database of the module's own, filled once (by `engine`) however the module's tests are
    interleaved with others on this test process: on the process's shared database, any other
    test emptied it, and the next test here filled it again (about a minute each on a busy
    machine; three times in one `make test`)."""
    name = f"sinch_plans_{worker_id}_{os.getpid()}"
    url = create_postgres_database(name)
    yield url
    drop_postgres_database(name)


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    # The service's 30 s bound on a statement is too short for inserting the 100,000 rows on a
    # loaded machine (it timed out, and each next test filled again, for a minute each): the
    # fill's statements get five minutes; the EXPLAINs take milliseconds.
    engine = create_engine(
        Settings(_env_file=None, database_url=postgres_url),  # type: ignore[call-arg]
        connect_args={"timeout": 5, "command_timeout": 300},
    )
    async with engine.begin() as connection:
        if not (await connection.execute(text("SELECT count(*) FROM registrations"))).scalar():
            await fill(connection)
    try:
        yield engine
    finally:
        await engine.dispose()


async def fill(connection: AsyncConnection) -> None:
    # Neither the count triggers (a delta row for each row inserted) nor the foreign keys' checks
    # bear on the plans; they took most of the fill's time. The data is consistent by construction.
    # (It takes a superuser, as the tests' PostgreSQL URL is: trust, user postgres.)
    await connection.execute(text("SET LOCAL session_replication_role = replica"))
    rng = random.Random(5)
    now = datetime.now(UTC)
    await connection.execute(
        insert(Project),
        [
            {"id": project_id, "name": project_id, "created_at": now, "updated_at": now}
            for project_id in PROJECT_IDS[1:]
        ],
    )
    registrations: list[dict[str, Any]] = [
        {
            "id": f"{rng.getrandbits(64):016x}-{number}",
            "project_id": PROJECT_IDS[number % len(PROJECT_IDS)],
            "status": rng.choice(STATUSES),
            "registration_type": rng.choice(TYPES),
            "status_changed_at": T0 + timedelta(seconds=rng.randrange(30 * 86_400)),
            "last_synced_at": now,
            "sinch": {"id": str(number)},
            "created_at": now,
            "updated_at": now,
            "sender_ids": [f"S{number:06d}{suffix}" for suffix in "AB"[: rng.randint(1, 2)]],
            "tags": rng.sample(TAGS, rng.randint(0, 3)),
            "market_code": rng.choice(MARKETS),
        }
        for number in range(REGISTRATIONS)
    ]
    await connection.execute(insert(Registration), registrations)
    await connection.execute(
        insert(RegistrationSenderId),
        [
            {"registration_id": r["id"], "sender_id": sender_id}
            for r in registrations
            for sender_id in r["sender_ids"]
        ],
    )
    await connection.execute(
        insert(RegistrationTag),
        [{"registration_id": r["id"], "tag": tag} for r in registrations for tag in r["tags"]],
    )
    events = [
        {
            "project_id": PROJECT_IDS[number % len(PROJECT_IDS)],
            "dedup_key": f"event-{number}",
            "event_id": f"event-{number}",
            "registration_id": rng.choice(registrations)["id"],
            "body": b"{}" * 50,
            "headers": {"content-type": "application/json"},
            "secret_index": 0,
            "received_at": now,
            "state": rng.choices(list(STATE_WEIGHTS), list(STATE_WEIGHTS.values()))[0],
            "attempts": 1,
        }
        for number in range(EVENTS)
    ]
    await connection.execute(insert(CallbackEvent), events)
    history = [
        {
            "registration_id": registration["id"],
            "project_id": registration["project_id"],
            "from_status": None,
            "to_status": registration["status"],
            "at": registration["status_changed_at"],
            "source": "reconcile",
            "recorded_at": now,
        }
        for registration in registrations
    ]
    await connection.execute(insert(RegistrationHistory), history)
    # A forecast each, one in fifty overdue (app/forecasts/).
    forecasts = [
        {
            "registration_id": registration["id"],
            "project_id": DEFAULT_PROJECT_ID,
            "market_code": registration["market_code"],
            "registration_type": registration["registration_type"],
            "submitted_at": registration["status_changed_at"],
            "customer_seconds": 0.0,
            "overdue": rng.random() < 0.02,
            "basis": "history",
            "samples": 100,
            "sinch_seconds": 0.0,
            "waited_customer_seconds": 0.0,
            "stays_from": now,
            "computed_at": now,
        }
        for registration in registrations
    ]
    await connection.execute(insert(RegistrationForecast), forecasts)
    for table in (
        "registration_forecasts",
        "registrations",
        "registration_sender_ids",
        "registration_tags",
        "registration_history",
        "callback_events",
    ):
        await connection.execute(text(f"ANALYZE {table}"))


async def explain(engine: AsyncEngine, statement: Select[Any]) -> str:
    async with engine.connect() as connection:
        sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
        rows = await connection.execute(text(f"EXPLAIN {sql}"))
        return "\n".join(row[0] for row in rows)


def assert_indexed(plan: str, *indexes: str) -> None:
    """No sequential scan, and the rows come from one of `indexes` (the ones meant for the case):
    an index scan (plain, backward or index-only: "using <index>") or a bitmap index scan."""
    assert "Seq Scan" not in plan, plan
    assert any(
        f"using {index} " in plan or f"Bitmap Index Scan on {index} " in plan for index in indexes
    ), plan


SINCE = T0 + timedelta(days=10)
AFTER_ID = registration_queries.IdKey(id="8")
AFTER_CHANGE = registration_queries.ChangedKey(id="8", at=T0 + timedelta(days=12))
BY_STATUS = "ix_registrations_status_id"
BY_TYPE = "ix_registrations_registration_type_id"
BY_CHANGE = "ix_registrations_status_changed_at_id"
BY_STATUS_CHANGE = "ix_registrations_status_status_changed_at_id"
BY_TYPE_CHANGE = "ix_registrations_registration_type_status_changed_at_id"
BY_SENDER_ID = "ix_registration_sender_ids_sender_id"
BY_TAG = "ix_registration_tags_tag"
BY_MARKET = "ix_registrations_market_code_id"
BY_OVERDUE = "ix_registration_forecasts_overdue"
BY_PROJECT = "ix_registrations_project_id_id"
BY_PROJECT_STATUS = "ix_registrations_project_id_status_id"
BY_PROJECT_CHANGE = "ix_registrations_project_id_status_changed_at_id"
FILTERS = {
    "none": (RegistrationFilters(), ["pk_registrations"]),
    "status": (RegistrationFilters(statuses=("APPROVED",)), [BY_STATUS]),
    "statuses": (
        RegistrationFilters(statuses=("PENDING", "ON_HOLD")),
        [BY_STATUS, "pk_registrations"],
    ),
    "type": (RegistrationFilters(registration_type="SHORT_CODE"), [BY_TYPE]),
    "status+type": (
        RegistrationFilters(statuses=("APPROVED",), registration_type="SHORT_CODE"),
        [BY_STATUS, BY_TYPE],
    ),
    "senderId": (RegistrationFilters(sender_id="S004242A"), [BY_SENDER_ID]),
    "senderId+market": (
        RegistrationFilters(sender_id="S004242A", market_code="GB"),
        [BY_SENDER_ID],
    ),
    "market": (RegistrationFilters(market_code="GB"), [BY_MARKET]),
    "market+status": (
        RegistrationFilters(market_code="GB", statuses=("APPROVED",)),
        [BY_MARKET, BY_STATUS],
    ),
    "tag": (RegistrationFilters(tags=("#team-7",)), [BY_TAG]),
    "tags": (RegistrationFilters(tags=("#team-7", "#team-8")), [BY_TAG]),
    "tag+market": (RegistrationFilters(tags=("#team-7",), market_code="SE"), [BY_TAG, BY_MARKET]),
    "overdue": (RegistrationFilters(overdue=True), [BY_OVERDUE]),
    "overdue+market": (RegistrationFilters(overdue=True, market_code="GB"), [BY_OVERDUE]),
    "not-overdue": (RegistrationFilters(overdue=False), ["pk_registrations"]),
    "since": (RegistrationFilters(updated_since=SINCE), [BY_CHANGE]),
    "since+status": (
        RegistrationFilters(updated_since=SINCE, statuses=("REJECTED",)),
        [BY_STATUS_CHANGE],
    ),
    # A `projectId` filter, or a token limited to projects.
    "project": (RegistrationFilters(projects=ONE_PROJECT), [BY_PROJECT, "pk_registrations"]),
    "projects": (RegistrationFilters(projects=TWO_PROJECTS), [BY_PROJECT, "pk_registrations"]),
    "project+status": (
        RegistrationFilters(projects=ONE_PROJECT, statuses=("APPROVED",)),
        [BY_PROJECT_STATUS],
    ),
    "project+since": (
        RegistrationFilters(projects=ONE_PROJECT, updated_since=SINCE),
        # Ten projects of a size: walking the changes and skipping nine rows in ten is as cheap.
        [BY_PROJECT_CHANGE, BY_CHANGE],
    ),
    "project+tag": (RegistrationFilters(projects=ONE_PROJECT, tags=("#team-7",)), [BY_TAG]),
    "since+type": (
        RegistrationFilters(updated_since=SINCE, registration_type="LONG_NUMBER"),
        [BY_TYPE_CHANGE],
    ),
    "all": (
        RegistrationFilters(
            updated_since=SINCE, statuses=("REJECTED",), registration_type="LONG_NUMBER"
        ),
        [BY_STATUS_CHANGE, BY_TYPE_CHANGE],
    ),
}


@pytest.mark.parametrize(("filters", "indexes"), FILTERS.values(), ids=FILTERS.keys())
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "next-page"])
async def test_registration_list_uses_its_index(
    engine: AsyncEngine,
    filters: registration_queries.RegistrationFilters,
    indexes: list[str],
    paged: bool,
) -> None:
    after = (AFTER_CHANGE if filters.by_change else AFTER_ID) if paged else None
    statement = registration_queries.list_statement(filters, after=after, limit=LIMIT)
    assert_indexed(await explain(engine, statement), *indexes)


async def explain_analyze(connection: AsyncConnection, statement: Select[Any]) -> str:
    sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    rows = await connection.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"))
    return "\n".join(row[0] for row in rows)


# A project's rows spread over states and times unlike the other projects' (the planner takes a
# project and a state, or a project and a time, as independent): the statement moves project-3's
# rows out of the page's state or time window, in a transaction rolled back after the EXPLAIN.
SKEWED = {
    "project+status": (
        "UPDATE registrations SET status = 'REJECTED' "
        "WHERE project_id = 'project-3' AND status = 'APPROVED'",
        RegistrationFilters(projects=ONE_PROJECT, statuses=("APPROVED",)),
        BY_PROJECT_STATUS,
    ),
    "project+since": (
        "UPDATE registrations SET status_changed_at = status_changed_at - interval '60 days' "
        "WHERE project_id = 'project-3' AND id NOT LIKE '%13'",
        RegistrationFilters(projects=ONE_PROJECT, updated_since=SINCE),
        BY_PROJECT_CHANGE,
    ),
}


@pytest.mark.parametrize(("skew", "filters", "index"), SKEWED.values(), ids=SKEWED.keys())
async def test_a_project_page_reads_only_its_own_rows_however_they_are_spread(
    engine: AsyncEngine, skew: str, filters: RegistrationFilters, index: str
) -> None:
    """A project with no (or few) rows in a state or a time window: its page is answered from the
    rows it shows, never by walking the other projects' rows (bench/api.py --projects 10 reads
    100,000 rows for an empty page otherwise)."""
    statement = registration_queries.list_statement(filters, after=None, limit=LIMIT)
    async with engine.connect() as connection, connection.begin() as transaction:
        await connection.execute(text(skew))
        await connection.execute(text("ANALYZE registrations"))
        plan = await explain_analyze(connection, statement)
        await transaction.rollback()
    assert f"using {index} " in plan, plan
    assert "Rows Removed by Filter" not in plan, plan


async def test_registration_get_and_history_use_an_index(engine: AsyncEngine) -> None:
    statement = registration_queries.registration_statement("x-1")
    assert_indexed(await explain(engine, statement), "pk_registrations")
    statement = registration_queries.history_statement("x-1")
    assert_indexed(await explain(engine, statement), "ix_registration_history_registration_id_at")


BY_STATE = "ix_callback_events_state_id"
BY_REGISTRATION = "ix_callback_events_registration_id_id"
EVENTS_BY_PROJECT = "ix_callback_events_project_id_id"
EVENT_FILTERS = {
    "none": (EventFilters(), ["pk_callback_events"]),
    "state": (EventFilters(state=EventState.FAILED), [BY_STATE]),
    "registration": (EventFilters(registration_id="x-1"), [BY_REGISTRATION]),
    "both": (
        EventFilters(state=EventState.FAILED, registration_id="x-1"),
        [BY_REGISTRATION, BY_STATE],
    ),
    "project": (EventFilters(projects=ONE_PROJECT), [EVENTS_BY_PROJECT, "pk_callback_events"]),
    "project+state": (
        EventFilters(projects=ONE_PROJECT, state=EventState.FAILED),
        # Few rows of a state in one project: a bitmap AND of the two may lead.
        [BY_STATE, EVENTS_BY_PROJECT, "ix_callback_events_state_received_at"],
    ),
}


@pytest.mark.parametrize(("filters", "indexes"), EVENT_FILTERS.values(), ids=EVENT_FILTERS.keys())
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "next-page"])
async def test_event_list_uses_its_index(
    engine: AsyncEngine, filters: event_queries.EventFilters, indexes: list[str], paged: bool
) -> None:
    before = event_queries.EventKey(id=EVENTS // 2) if paged else None
    statement = event_queries.list_statement(filters, before=before, limit=LIMIT)
    assert_indexed(await explain(engine, statement), *indexes)


async def test_event_get_uses_an_index(engine: AsyncEngine) -> None:
    assert_indexed(await explain(engine, event_queries.event_statement(42)), "pk_callback_events")
    limited = event_queries.event_statement(42, ONE_PROJECT)
    assert_indexed(await explain(engine, limited), "pk_callback_events", EVENTS_BY_PROJECT)


async def test_a_limited_registration_get_uses_an_index(engine: AsyncEngine) -> None:
    statement = registration_queries.registration_statement("x-1", TWO_PROJECTS)
    assert_indexed(await explain(engine, statement), "pk_registrations")
