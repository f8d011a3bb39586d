"""One callback the database cannot store as sent never costs any callback its 200 (issue 18, 2).

Ids holding a NUL (PostgreSQL refuses it in text) or a lone surrogate (no UTF-8 encoder takes it)
are unusable, so they are read as absent: such a callback is kept by its body's digest and, with no
usable registration id, ends `invalid`. And whatever else a database refuses in one row (here a
constraint or trigger the test adds) fails neither the other rows of its group commit nor the row
itself: it is kept without the ids parsed from its body.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.callbacks.writer import InboxWriter
from app.core.db import create_engine, utcnow
from app.core.settings import Settings
from app.events.parsing import body_digest, parse_callback
from app.events.repository import NewCallback
from app.worker.context import WorkerContext
from app.worker.tasks import process_event
from tests.callbacks.conftest import event_body, post_signed
from tests.conftest import make_settings
from tests.support.reads import events
from tests.support.worker import worker_context

# As the JSON of a callback spells them: the body's bytes are plain ASCII.
NUL = "\\u0000"
LONE_SURROGATE = "\\ud800"


def raw_body(fields: dict[str, str]) -> bytes:
    """A callback body whose string values are written verbatim, JSON escapes included."""
    members = ", ".join(f'"{name}": "{value}"' for name, value in fields.items())
    return ("{" + members + "}").encode("ascii")


NUL_EVENT_ID = raw_body({"eventId": f"evt{NUL}1", "resourceId": f"reg{NUL}", "status": "APPROVED"})
SURROGATE_RESOURCE_ID = raw_body(
    {"eventId": f"evt-{uuid.uuid4()}", "resourceId": f"reg-{LONE_SURROGATE}", "status": "APPROVED"}
)
SURROGATE_EVENT_ID = raw_body(
    {"eventId": f"{LONE_SURROGATE}", "registrationId": f"{NUL}", "id": f"x{LONE_SURROGATE}"}
)
BAD_BODIES = [NUL_EVENT_ID, SURROGATE_RESOURCE_ID, SURROGATE_EVENT_ID]


@pytest.fixture
async def worker_ctx(settings: Settings) -> AsyncIterator[WorkerContext]:
    """The context the real worker builds at start-up; no Sinch is configured (none is needed:
    an event without a usable registration id is invalid without a GET)."""
    async with worker_context(settings) as ctx:
        yield ctx


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url, worker_metrics_port=0)


def test_ids_no_database_can_store_are_read_as_absent() -> None:
    assert json.loads(NUL_EVENT_ID)["eventId"] == "evt\x001"  # what the JSON really says
    fields = parse_callback(NUL_EVENT_ID)
    assert (fields.is_json_object, fields.event_id, fields.registration_id) == (True, None, None)
    assert fields.status == "APPROVED"

    fields = parse_callback(SURROGATE_RESOURCE_ID)
    assert fields.event_id is not None and fields.event_id.startswith("evt-")
    assert fields.registration_id is None

    assert parse_callback(SURROGATE_EVENT_ID).event_id is None
    assert parse_callback(SURROGATE_EVENT_ID).registration_id is None

    # An unusable id is skipped like an empty one: the next name may still give a usable id.
    fields = parse_callback(raw_body({"resourceId": f"a{NUL}", "registrationId": "reg-ok"}))
    assert fields.registration_id == "reg-ok"
    # Non-ASCII that UTF-8 can encode is an ordinary id.
    assert parse_callback('{"eventId": "évt-ü"}'.encode()).event_id == "évt-ü"


async def test_signed_callbacks_with_unstorable_ids_are_kept_and_end_invalid(
    api: httpx.AsyncClient, settings: Settings, worker_ctx: WorkerContext
) -> None:
    for body in BAD_BODIES:
        response = await post_signed(api, body)
        assert response.status_code == 200, response.text
    # Sent again, each is the same event: counted, not kept twice.
    for body in BAD_BODIES:
        assert (await post_signed(api, body)).status_code == 200

    kept = list(await events(settings))
    assert [event.body for event in kept] == BAD_BODIES  # the raw bytes are the record
    assert [event.duplicate_count for event in kept] == [1, 1, 1]
    assert all(event.registration_id is None for event in kept)
    nul, surrogate, both = kept
    assert nul.event_id is None and nul.dedup_key == body_digest(NUL_EVENT_ID)
    assert surrogate.event_id == json.loads(SURROGATE_RESOURCE_ID)["eventId"]
    assert surrogate.dedup_key == surrogate.event_id
    assert both.event_id is None and both.dedup_key == body_digest(SURROGATE_EVENT_ID)

    for event in kept:
        assert await process_event(worker_ctx, event.id) == "invalid:no_registration_id"
    assert [(event.state, event.outcome) for event in await events(settings)] == [
        ("invalid", "invalid:no_registration_id")
    ] * 3


async def test_innocent_callbacks_sent_with_unstorable_ones_are_all_kept(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    innocent = [event_body(event_id=f"evt-{n}-{uuid.uuid4()}") for n in range(120)]
    # The bad bodies spread through the burst, so that group commits hold both kinds.
    bodies = innocent[:40] + BAD_BODIES[:1] + innocent[40:80] + BAD_BODIES[1:] + innocent[80:]
    responses = await asyncio.gather(*(post_signed(api, body) for body in bodies))
    assert [response.status_code for response in responses] == [200] * len(bodies)
    kept = {event.body: event for event in await events(settings)}
    assert set(kept) == set(bodies)
    for body in innocent:
        assert kept[body].event_id == json.loads(body)["eventId"]
        assert kept[body].registration_id == json.loads(body)["resourceId"]


# --- a row the database refuses, whatever parsing reads ----------------------------------------

REFUSED_KEY = "evt-the-database-refuses"


async def refuse_key_in_database(settings: Settings) -> None:
    """Make the test's database refuse any inbox row whose dedup key is `REFUSED_KEY`."""
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "ALTER TABLE callback_events ADD CONSTRAINT test_refuses_a_key "
                    f"CHECK (dedup_key <> '{REFUSED_KEY}')"
                )
            )
    finally:
        await engine.dispose()


async def accept_every_key_again(settings: Settings) -> None:
    # The database is shared by this process's tests (truncated between them).
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("ALTER TABLE callback_events DROP CONSTRAINT IF EXISTS test_refuses_a_key")
            )
    finally:
        await engine.dispose()


@pytest.fixture
async def refusing_database(settings: Settings) -> AsyncIterator[Settings]:
    await refuse_key_in_database(settings)
    try:
        yield settings
    finally:
        await accept_every_key_again(settings)


def new_callback(project_id: str, body: bytes) -> NewCallback:
    fields = parse_callback(body)
    return NewCallback(
        project_id=project_id,
        dedup_key=fields.event_id or body_digest(body),
        event_id=fields.event_id,
        registration_id=fields.registration_id,
        body=body,
        headers={"x-sinch-signature": "kept-as-sent"},
        peer="127.0.0.1",
        secret_index=0,
        received_at=utcnow(),
    )


async def test_a_refused_row_fails_no_other_row_of_its_batch(refusing_database: Settings) -> None:
    settings = refusing_database
    project = settings.settings_project_id
    engine = create_engine(settings)
    committed: list[int] = []

    async def on_committed(row_ids: Any) -> None:
        committed.extend(row_ids)

    writer = InboxWriter(engine, on_committed=on_committed)
    writer.start()
    try:
        innocent = [event_body(event_id=f"evt-{n}-{uuid.uuid4()}") for n in range(40)]
        refused = event_body(event_id=REFUSED_KEY, registration_id="reg-refused")
        bodies = [*innocent[:25], refused, *innocent[25:], innocent[0]]
        # Queued together before the writer runs: they make one group commit.
        results = await asyncio.wait_for(
            asyncio.gather(*(writer.store(new_callback(project, body)) for body in bodies)), 30
        )
        again = await asyncio.wait_for(writer.store(new_callback(project, refused)), 30)
    finally:
        await writer.stop()
        await engine.dispose()

    assert [result.duplicate for result in results] == [False] * 41 + [True]
    assert again.duplicate  # Sinch's retry of the refused callback finds it kept
    kept = {event.body: event for event in await events(settings)}
    assert set(kept) == set(bodies)
    assert sorted(committed) == sorted(event.id for event in kept.values())  # all enqueued
    assert kept[innocent[0]].duplicate_count == 1
    for body in innocent:
        assert kept[body].dedup_key == json.loads(body)["eventId"]
    row = kept[refused]
    assert (row.dedup_key, row.event_id, row.registration_id) == (body_digest(refused), None, None)
    assert row.headers == {"x-sinch-signature": "kept-as-sent"}
    assert row.duplicate_count == 1
    assert row.state == "received"


async def test_a_refused_callback_is_answered_200_with_its_burst(
    refusing_database: Settings, api: httpx.AsyncClient
) -> None:
    settings = refusing_database
    innocent = [event_body(event_id=f"evt-{n}-{uuid.uuid4()}") for n in range(60)]
    refused = event_body(event_id=REFUSED_KEY, registration_id="reg-refused")
    bodies = [*innocent[:30], refused, *innocent[30:]]
    responses = await asyncio.gather(*(post_signed(api, body) for body in bodies))
    assert [response.status_code for response in responses] == [200] * len(bodies)
    kept = {event.body: event for event in await events(settings)}
    assert set(kept) == set(bodies)
    assert kept[refused].dedup_key == body_digest(refused)
    assert kept[refused].headers["x-sinch-signature"]
