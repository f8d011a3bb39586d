"""The change feed's property, end to end: a reader that applies every item of the feed, in order,
holds exactly what `GET /v1/registrations` answers, and sees every `seq` once, without a gap.

Everything is real, as in tests/worker/test_convergence.py: the simulator as Sinch, the API and
the worker as child processes, a private Redis, and PostgreSQL. While the simulator delivers
lifecycles' callbacks shuffled and duplicated, `refresh` is called through the API for some
registrations; then Sinch moves on without telling (no callbacks) and a reconciliation catches up.
Two readers follow the feed from the start to the end: a long-poll loop on `GET /v1/changes` and
a Server-Sent Events stream on `GET /v1/changes/stream`.

The sync times (`statusChangedAt`, `lastSyncedAt`, `updatedAt`) are compared apart: docs/api.md
(Change feed) says they "change with the next item, not on their own", so a document that changes
nothing (a refresh, a reconciliation, a facts fetch confirming what is held) moves them without an
item. A reader holds them as of its registration's last change: never later than the answer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from sqlalchemy import func, select

from app.changes.sequencer import number_and_publish
from app.core.db import create_engine, create_sessionmaker
from app.core.models import CallbackEvent, EventState
from app.core.settings import Settings
from app.registrations.reconcile import reconcile
from app.registrations.states import State
from app.sinch.client import SinchClient, create_http_client
from devtools.simulator import SimulatorControl
from tests.support.reads import wait_for_facts
from tests.support.stack import API_TOKEN, CALLBACK_PATH, Stack, running_stack

# One group for the module: its tests share one stack (a module fixture), built once in one test
# process; the other end-to-end modules run beside it in the others.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e_feed")]

UNKNOWN_STATE = "SUSPENDED_BY_CARRIER"  # a state Sinch might add one day
DRAIN_SECONDS = 60.0
CATCH_UP_SECONDS = 10.0  # a wake-up slept through costs the stream 30 s: caught here
SCENARIO_SECONDS = 150.0  # one whole example; a pass takes a small fraction of it
LONG_POLL_WAIT = 5
PING_SECONDS = 20.0  # the stream's comment line comes after 15 s without an event
SYNC_TIMES = ("statusChangedAt", "lastSyncedAt", "updatedAt")
"""Moved by a document that changes nothing else, without an item (module docstring)."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("feed")
    with running_stack(
        folder,
        f"feed_{worker_id}",
        RECONCILE_INTERVAL_SECONDS="0",  # the test reconciles when it wants to
        SWEEP_INTERVAL_SECONDS="2",
        SWEEP_GRACE_SECONDS="5",
        JOB_TIMEOUT_SECONDS="120",
    ) as running:
        running.start_api_and_worker()
        yield running


def answer(registration: dict[str, Any]) -> dict[str, Any]:
    """What an item is about: the registration's answer but its sync times."""
    return {k: v for k, v in registration.items() if k not in SYNC_TIMES}


# --- the readers ------------------------------------------------------------------------------


@dataclass
class Reader:
    """What one reader of the feed saw: every `seq` in order, and each registration as of its
    newest item. Odd items are noted (and asserted at the end), so that the reader keeps going."""

    name: str
    seqs: list[int] = field(default_factory=list)
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    comments: int = 0
    connections: int = 0

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def take(self, item: dict[str, Any]) -> None:
        seq, rid, registration = item["seq"], item["registrationId"], item["registration"]
        before = self.held.get(rid)
        expected_from = None if before is None else before["status"]
        if registration.get("id") != rid:
            self.faults.append(f"seq {seq}: registration.id {registration.get('id')!r} != {rid!r}")
        if registration.get("status") != item["toStatus"]:
            self.faults.append(f"seq {seq}: registration.status differs from toStatus")
        if "sinch" in registration:
            self.faults.append(f"seq {seq}: the item carries Sinch's document")
        if item["fromStatus"] != expected_from:
            self.faults.append(
                f"seq {seq} ({rid}): fromStatus {item['fromStatus']!r}, but the item before "
                f"left it {expected_from!r}"
            )
        if before is not None and answer(before) == answer(registration):
            self.faults.append(f"seq {seq} ({rid}): an item that changes nothing")
        changed = item["fromStatus"] != item["toStatus"]
        if item["kind"] != ("status" if changed else "details"):
            moved = f"{item['fromStatus']!r} -> {item['toStatus']!r}"
            self.faults.append(f"seq {seq}: kind {item['kind']!r} for {moved}")
        self.seqs.append(seq)
        self.held[rid] = registration


async def long_poll(api: httpx.AsyncClient, reader: Reader) -> None:
    """GET /v1/changes, each request after the cursor of the one before (the first without)."""
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"wait": LONG_POLL_WAIT}
        if cursor is not None:
            params["cursor"] = cursor
        response = await api.get("/v1/changes", params=params)
        assert response.status_code == 200, response.text
        reader.connections += 1
        body = response.json()
        for item in body["items"]:
            reader.take(item)
        position = str(reader.last) if body["items"] else (cursor or "0")
        if body["nextCursor"] != position:
            reader.faults.append(f"nextCursor {body['nextCursor']!r}, expected {position!r}")
        cursor = body["nextCursor"]


async def stream(
    api: httpx.AsyncClient,
    reader: Reader,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
) -> None:
    """Follow GET /v1/changes/stream, parsing the SSE lines (`id:`, `event:`, `data:`; `:` starts
    a comment); from `Last-Event-ID` when given. Returns (disconnecting) after `stop_after`
    events, else runs until cancelled."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with api.stream("GET", "/v1/changes/stream", headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        reader.connections += 1
        taken = 0
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                reader.comments += 1
                continue
            if line:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data" and "data" in fields:
                    value = f"{fields['data']}\n{value}"  # several data lines make one
                fields[name] = value
                continue
            if not fields:
                continue
            event, fields = fields, {}
            item = json.loads(event["data"])
            if event.get("event") != "change":
                reader.faults.append(f"event type {event.get('event')!r}")
            if event.get("id") != str(item["seq"]):
                reader.faults.append(f"SSE id {event.get('id')!r} for seq {item['seq']}")
            reader.take(item)
            taken += 1
            if stop_after is not None and taken >= stop_after:
                return


@contextlib.asynccontextmanager
async def running(*coroutines: Awaitable[None]) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run the readers in the background; always stop them."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def raise_if_dead(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done():
            task.result()  # a reader's error, surfaced here
            raise AssertionError("a reader stopped on its own")


async def caught_up(readers: list[Reader], tasks: list[asyncio.Task[None]], newest: int) -> None:
    """Wait (bounded) until every reader has read up to `newest`."""
    try:
        async with asyncio.timeout(CATCH_UP_SECONDS):
            while any(r.last < newest for r in readers):
                raise_if_dead(tasks)
                await asyncio.sleep(0.02)
    except TimeoutError:
        where = {r.name: r.last for r in readers}
        raise AssertionError(f"readers never reached seq {newest}: {where}") from None


# --- the service's side ---------------------------------------------------------------------


def api_client(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.api_url,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        # The stream's comment comes after 15 s without an event; a long poll holds for 5 s.
        timeout=httpx.Timeout(10, read=40),
    )


async def received_events(settings: Settings, registration_ids: list[str]) -> tuple[int, int]:
    """(events still `received`, events in all) of these registrations."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(CallbackEvent.state, func.count())
                .where(CallbackEvent.registration_id.in_(registration_ids))
                .group_by(CallbackEvent.state)
            )
            counts = {state: count for state, count in rows}
    finally:
        await engine.dispose()
    return counts.get(EventState.RECEIVED, 0), sum(counts.values())


async def drain(settings: Settings, registration_ids: list[str], expected_events: int) -> None:
    """Wait (bounded) until every delivered event of these registrations has been processed."""
    waiting, total = 0, 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while True:
                waiting, total = await received_events(settings, registration_ids)
                if waiting == 0 and total >= expected_events:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"events not processed in {DRAIN_SECONDS}s: {waiting} waiting, {total} kept"
        ) from None


async def run_reconcile(settings: Settings) -> None:
    """One reconciliation run, as `python -m app reconcile` does it, including the numbering of
    what it recorded."""
    engine = create_engine(settings)
    redis = Redis.from_url(settings.redis_url)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with create_http_client(settings) as http:
            await reconcile(sessionmaker, SinchClient.from_settings(settings, http))
        await number_and_publish(sessionmaker, redis)
    finally:
        await redis.aclose()
        await engine.dispose()


async def newest_seq(api: httpx.AsyncClient) -> int:
    response = await api.get("/v1/changes", params={"cursor": "latest"})
    assert response.status_code == 200, response.text
    return int(response.json()["nextCursor"])


async def listed(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """Every registration of GET /v1/registrations (all pages), without Sinch's document."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": 7}  # a few pages: the walk is part of the reading
        if cursor is not None:
            params["cursor"] = cursor
        response = await api.get("/v1/registrations", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        for item in body["items"]:
            assert item["id"] not in found, "a registration listed twice"
            item.pop("sinch")
            item.pop("forecast")  # it moves with time, not with changes: not in the feed
            item.pop("needsAction")  # derived from the status and reason the feed carries
            found[item["id"]] = item
        cursor = body["nextCursor"]
        if cursor is None:
            return found
    raise AssertionError("the listing never ended")


async def settle_and_list(
    stack: Stack, api: httpx.AsyncClient, readers: list[Reader], tasks: list[asyncio.Task[None]]
) -> tuple[int, dict[str, dict[str, Any]]]:
    """Once the work is done: number what is left, wait for the readers to reach the newest
    change, and list the registrations; again if a change was numbered meanwhile (a late facts
    fetch, a market filled in). Answers (newest seq, the listing)."""
    await wait_for_facts(stack.settings)
    engine = create_engine(stack.settings)
    redis = Redis.from_url(stack.settings.redis_url)
    try:
        for _ in range(5):
            await number_and_publish(create_sessionmaker(engine), redis)
            newest = await newest_seq(api)
            await caught_up(readers, tasks, newest)
            registrations = await listed(api)
            if await newest_seq(api) == newest:
                return newest, registrations
    finally:
        await redis.aclose()
        await engine.dispose()
    raise AssertionError("the feed never stood still")


def as_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def assert_holds_the_listing(
    reader: Reader, newest: int, registrations: dict[str, dict[str, Any]]
) -> None:
    assert not reader.faults, f"{reader.name}: {reader.faults[:5]}"
    seqs = reader.seqs
    assert seqs, f"{reader.name} read nothing"
    assert len(set(seqs)) == len(seqs), f"{reader.name}: a seq repeated"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{reader.name}: a gap or a step back"
    assert seqs[0] == 1 and seqs[-1] == newest, f"{reader.name}: {seqs[0]}..{seqs[-1]}"
    assert set(reader.held) == set(registrations), f"{reader.name}: other registrations"
    for rid, current in registrations.items():
        held = reader.held[rid]
        assert answer(held) == answer(current), (
            f"{reader.name} holds {rid} otherwise than the API answers it"
        )
        for name in ("lastSyncedAt", "updatedAt"):
            then, now = as_time(held[name]), as_time(current[name])
            assert then is None or (now is not None and then <= now), (reader.name, rid, name)


# --- the property ---------------------------------------------------------------------------

STATES = [*(s.value for s in State if s is not State.DRAFT), UNKNOWN_STATE]
COMMENTS = ["Document missing: proof of brand ownership", "Awaiting the carrier's answer"]
Move = tuple[str, str | None]
"""A move at Sinch: the state, and a comment (logged, and sent as the callback's `comments`)."""


def walk(start: str, size: int) -> st.SearchStrategy[list[str]]:
    """States to move through from `start`, each different from the one before."""
    return st.lists(st.sampled_from(STATES), min_size=0, max_size=size).filter(
        lambda path: all(a != b for a, b in itertools.pairwise([start, *path]))
    )


# Any state, the current one included: a move to the same state with a comment changes only the
# reason (a `details` change, found by the GET that checks the callback).
moves_strategy = st.lists(
    st.tuples(st.sampled_from(STATES), st.none() | st.sampled_from(COMMENTS)), max_size=5
)


@dataclass(frozen=True)
class Plan:
    lifecycles: list[list[str]]
    """Per registration: states after IN_QUEUE, made at creation; their callbacks are delivered
    shuffled and duplicated (the first one processed makes the service GET the registration)."""
    moves: list[list[Move]]
    """Per registration: moves made next, once it is known here; their callbacks are delivered
    shuffled and duplicated too (these can be trusted, and race the refreshes)."""
    later: list[list[Move]]
    """Per registration: moves made last, without callbacks (caught by reconciliation)."""
    refresh: list[bool]
    """Per registration: whether `refresh` is called for it while each batch of callbacks
    arrives."""
    seed: int
    duplicates: int


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    lifecycles = draw(st.lists(walk("IN_QUEUE", 3), min_size=2, max_size=5))
    size = len(lifecycles)
    return Plan(
        lifecycles=lifecycles,
        moves=draw(st.lists(moves_strategy, min_size=size, max_size=size)),
        later=draw(st.lists(moves_strategy.map(lambda m: m[:2]), min_size=size, max_size=size)),
        refresh=draw(st.lists(st.booleans(), min_size=size, max_size=size)),
        seed=draw(st.integers(0, 2**16)),
        duplicates=draw(st.integers(0, 4)),
    )


FIXED = Plan(
    lifecycles=[["IN_PROGRESS", "PENDING"], ["IN_PROGRESS"], [], ["IN_PROGRESS", "ON_HOLD"]],
    moves=[
        [("PENDING", COMMENTS[0]), ("IN_PROGRESS", None), ("APPROVED", None)],
        [("PENDING", None), ("IN_PROGRESS", COMMENTS[1]), ("REJECTED", None)],
        [("IN_PROGRESS", None), (UNKNOWN_STATE, None), ("IN_PROGRESS", None)],
        [("ON_HOLD", COMMENTS[1])],
    ],
    later=[
        [],
        [("REJECTED", COMMENTS[0])],
        [("PENDING_ATTACHMENTS", None)],
        [("IN_PROGRESS", None)],
    ],
    refresh=[True, False, True, True],
    seed=11,
    duplicates=4,
)


async def _deliver_while_refreshing(
    stack: Stack,
    sim: SimulatorControl,
    api: httpx.AsyncClient,
    plan: Plan,
    ids: list[str],
    event_ids: list[str],
    seed: int,
) -> None:
    """Deliver the events shuffled and duplicated while `refresh` is called through the API for
    the chosen registrations; then wait until every event is processed."""

    async def refresh(rid: str, pause: float) -> int:
        await asyncio.sleep(pause)  # spread over the deliveries
        return (await api.post(f"/v1/registrations/{rid}/refresh")).status_code

    chosen = [rid for rid, wanted in zip(ids, plan.refresh, strict=True) if wanted]
    delivering = asyncio.ensure_future(
        sim.deliver(
            stack.api_url + CALLBACK_PATH,
            event_ids=event_ids,
            order="shuffled",
            duplicates=plan.duplicates,
            seed=seed,
            concurrency=4,
        )
    )
    try:
        refreshed = await asyncio.gather(*(refresh(rid, 0.02 * n) for n, rid in enumerate(chosen)))
    finally:
        results = await delivering
    assert {r["status"] for r in results} <= {200}
    assert set(refreshed) <= {200}
    recorded = [e for rid in ids for e in await sim.events(rid)]  # every one delivered by now
    await drain(stack.settings, ids, len(recorded))


async def _scenario(stack: Stack, plan: Plan) -> None:
    poller, streamer = Reader("long-poll"), Reader("sse")
    readers = [poller, streamer]
    async with (
        asyncio.timeout(SCENARIO_SECONDS),
        api_client(stack) as api,
        SimulatorControl(stack.sim.base_url) as sim,
        running(long_poll(api, poller), stream(api, streamer)) as tasks,
    ):
        ids = [(await sim.create_registration(lifecycle=p))["id"] for p in plan.lifecycles]
        first = [e["eventId"] for rid in ids for e in await sim.events(rid)]
        await _deliver_while_refreshing(stack, sim, api, plan, ids, first, plan.seed)
        raise_if_dead(tasks)

        moved = [
            (await sim.transition(rid, status, comment=comment))["eventId"]
            for rid, path in zip(ids, plan.moves, strict=True)
            for status, comment in path
        ]
        if moved:
            await _deliver_while_refreshing(stack, sim, api, plan, ids, moved, plan.seed + 1)
        raise_if_dead(tasks)

        for rid, path in zip(ids, plan.later, strict=True):
            for status, comment in path:
                await sim.transition(rid, status, comment=comment)  # no callback comes
        await run_reconcile(stack.settings)

        newest, registrations = await settle_and_list(stack, api, readers, tasks)
        truth = {rid: (await sim.registration(rid))["status"] for rid in ids}
        assert {rid: registrations[rid]["status"] for rid in ids} == truth
        for reader in readers:
            assert_holds_the_listing(reader, newest, registrations)
        assert poller.seqs == streamer.seqs


@hypothesis_settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans())
@example(plan=FIXED)
def test_readers_of_the_feed_hold_what_the_api_answers(stack: Stack, plan: Plan) -> None:
    asyncio.run(_scenario(stack, plan))


# --- resuming the stream --------------------------------------------------------------------


async def _play(stack: Stack, sim: SimulatorControl, lifecycles: list[list[str]]) -> None:
    """New registrations moved through `lifecycles` at Sinch, each callback delivered and
    processed before the next move: every move is trusted, one change each (at least)."""
    for path in lifecycles:
        rid = (await sim.create_registration())["id"]
        events = [(await sim.events(rid))[0]["eventId"]]
        for n, status in enumerate([None, *path]):
            if status is not None:
                events.append((await sim.transition(rid, status))["eventId"])
            results = await sim.deliver(stack.api_url + CALLBACK_PATH, event_ids=events[-1:])
            assert [r["status"] for r in results] == [200]
            await drain(stack.settings, [rid], n + 1)


async def _resume_scenario(stack: Stack) -> None:
    reader = Reader("sse, resumed")
    busy = ["IN_PROGRESS", "PENDING", "IN_PROGRESS", "APPROVED"]
    async with (
        asyncio.timeout(SCENARIO_SECONDS),
        api_client(stack) as api,
        SimulatorControl(stack.sim.base_url) as sim,
    ):
        await _play(stack, sim, [busy, busy])
        newest, _ = await settle_and_list(stack, api, [], [])
        assert newest >= 2 * (1 + len(busy))

        # 1. From the start; gone midway through what is already there.
        async with asyncio.timeout(CATCH_UP_SECONDS):
            await stream(api, reader, stop_after=newest // 2)
        assert reader.seqs == list(range(1, newest // 2 + 1))

        # 2. Changes while nobody listens; back with Last-Event-ID, gone again, in the middle of
        # what came while away.
        await _play(stack, sim, [busy])
        away, _ = await settle_and_list(stack, api, [], [])
        assert away > newest
        resumed_at = reader.last
        async with asyncio.timeout(CATCH_UP_SECONDS):
            await stream(api, reader, last_event_id=str(reader.last), stop_after=2)
        assert reader.seqs[-2:] == [resumed_at + 1, resumed_at + 2], "did not resume right after"

        # 3. Back again, and staying while new changes come live; then quiet long enough for a
        # comment line (": ping", after 15 s without an event), and one more change after it.
        async with running(stream(api, reader, last_event_id=str(reader.last))) as tasks:
            await _play(stack, sim, [busy])
            await settle_and_list(stack, api, [reader], tasks)
            try:
                async with asyncio.timeout(PING_SECONDS):
                    while not reader.comments:
                        raise_if_dead(tasks)
                        await asyncio.sleep(0.1)
            except TimeoutError:
                raise AssertionError(f"no comment line in {PING_SECONDS}s of quiet") from None
            await _play(stack, sim, [["IN_PROGRESS"]])
            newest, registrations = await settle_and_list(stack, api, [reader], tasks)
        assert reader.connections == 3
        assert_holds_the_listing(reader, newest, registrations)


def test_the_stream_resumes_exactly_after_the_last_event_id(stack: Stack) -> None:
    asyncio.run(_resume_scenario(stack))
