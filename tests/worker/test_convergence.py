"""The test that matters most: whatever order, duplicates and omissions, the local copy converges
on Sinch's truth.

Everything is real: the simulator as Sinch over HTTP, the API and the worker as child processes
(`uvicorn app.main:app`, `arq app.worker.WorkerSettings`), a private Redis, and PostgreSQL.
Hypothesis draws lifecycles (including transitions the table calls invalid and states nobody
knows) and how their callbacks arrive.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.core.db import create_engine, create_sessionmaker
from app.core.models import CallbackEvent, EventState
from app.core.settings import Settings
from app.registrations.facts import FACT_STATES
from app.registrations.reconcile import reconcile
from app.registrations.states import State, is_allowed
from app.sinch.client import SinchClient, create_http_client
from devtools.simulator import SimulatorControl
from tests.support.reads import (
    facts_as_kept,
    history,
    registrations,
    true_facts,
    wait_for_facts,
)
from tests.support.stack import CALLBACK_PATH, Stack, running_stack

UNKNOWN_STATE = "SUSPENDED_BY_CARRIER"  # a state Sinch might add one day
DRAIN_TIMEOUT_SECONDS = 60.0

# One group for the module: its tests share one stack (a module fixture), built once in one test
# process; the other end-to-end modules run beside it in the others.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e_convergence")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("e2e")
    with running_stack(
        folder,
        f"e2e_{worker_id}",
        RECONCILE_INTERVAL_SECONDS="0",  # the test reconciles when it wants to
        SWEEP_INTERVAL_SECONDS="2",
        SWEEP_GRACE_SECONDS="5",
        JOB_TIMEOUT_SECONDS="120",
    ) as running:
        running.start_api_and_worker()
        yield running


async def _backlog(settings: Settings, registration_ids: list[str]) -> tuple[int, int]:
    """(events still `received`, events in all) for these registrations."""
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
    """Wait until every delivered event of these registrations has been processed."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        waiting, total = await _backlog(settings, registration_ids)
        if waiting == 0 and total >= expected_events:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"events not processed in {DRAIN_TIMEOUT_SECONDS}s: {waiting} waiting")


async def run_reconcile(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        async with create_http_client(settings) as http:
            await reconcile(create_sessionmaker(engine), SinchClient.from_settings(settings, http))
    finally:
        await engine.dispose()


async def assert_converged(
    stack: Stack, sim: SimulatorControl, registration_ids: list[str]
) -> None:
    await wait_for_facts(stack.settings)
    truth = {rid: (await sim.registration(rid))["status"] for rid in registration_ids}
    local = {r.id: r for r in await registrations(stack.settings) if r.id in truth}
    assert {rid: r.status for rid, r in local.items()} == truth
    # Every fact too: sender IDs, market (through the policy map), tags, reason, status since...
    facts = {rid: true_facts(await sim.facts(rid)) for rid in registration_ids}
    assert {rid: facts_as_kept(r) for rid, r in local.items()} == facts
    for rid, registration in local.items():
        assert registration.sinch is not None or registration.status_changed_at is not None
        rows = [h for h in await history(stack.settings) if h.registration_id == rid]
        assert rows, f"{rid} has no history"
        assert rows[0].from_status is None
        assert [h.at for h in rows] == sorted(h.at for h in rows), "history out of time order"
        for before, after in itertools.pairwise(rows):
            assert after.from_status == before.to_status, "history chain broken"
        assert rows[-1].to_status == registration.status


states = st.sampled_from([*(s.value for s in State if s is not State.DRAFT), UNKNOWN_STATE])
lifecycles = st.lists(
    st.lists(states, min_size=0, max_size=5).filter(
        lambda path: all(a != b for a, b in itertools.pairwise(["IN_QUEUE", *path]))
    ),
    min_size=1,
    max_size=3,
)


async def _shuffled_scenario(
    stack: Stack, paths: list[list[str]], seed: int, duplicates: int, omit_mask: list[bool]
) -> None:
    async with SimulatorControl(stack.sim.base_url) as sim:
        ids = [(await sim.create_registration(lifecycle=path))["id"] for path in paths]
        recorded = [event for rid in ids for event in await sim.events(rid)]
        omitted = [
            e["eventId"]
            for e, drop in zip(recorded, itertools.cycle(omit_mask), strict=False)
            if drop
        ]
        results = await sim.deliver(
            stack.api_url + CALLBACK_PATH,
            event_ids=[e["eventId"] for e in recorded],
            order="shuffled",
            duplicates=duplicates,
            omit=omitted,
            seed=seed,
            concurrency=4,
        )
        assert {result["status"] for result in results} <= {200}
        delivered = {r["eventId"] for r in results}
        await drain(stack.settings, ids, len(delivered))
        if omitted:
            # A callback that never came is caught by reconciliation.
            await run_reconcile(stack.settings)
        await assert_converged(stack, sim, ids)


async def _in_order_scenario(stack: Stack, paths: list[list[str]]) -> None:
    async with SimulatorControl(stack.sim.base_url) as sim:
        gets_before = (await sim.stats()).get("getRegistration", 0)
        ids: list[str] = []
        expected_checks = 0
        for path in paths:
            doc = await sim.create_registration()
            rid = doc["id"]
            ids.append(rid)
            expected_checks += 1  # the first event names a registration we do not know
            sent = 0
            events = await sim.events(rid)
            await sim.deliver(stack.api_url + CALLBACK_PATH, event_ids=[events[0]["eventId"]])
            sent += 1
            await drain(stack.settings, [rid], sent)
            for previous, status in itertools.pairwise(["IN_QUEUE", *path]):
                event = await sim.transition(rid, status)
                await sim.deliver(stack.api_url + CALLBACK_PATH, event_ids=[event["eventId"]])
                sent += 1
                await drain(stack.settings, [rid], sent)
                allowed = is_allowed(previous, status)
                # A trusted move into a state whose meaning lives in Sinch's logs costs one
                # facts fetch (at most: moves in a row share one).
                expected_checks += (not allowed) + (allowed and status in FACT_STATES)
        await wait_for_facts(stack.settings)
        gets = (await sim.stats()).get("getRegistration", 0) - gets_before
        # In order, a GET is made only to learn a registration, to check a transition the table
        # does not allow, and to fetch the facts of a move into a fact state: everything else is
        # trusted as it comes.
        assert gets <= expected_checks, f"{gets} GETs for {expected_checks} doubtful events"
        await assert_converged(stack, sim, ids)


@hypothesis_settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    paths=lifecycles,
    seed=st.integers(0, 2**16),
    duplicates=st.integers(0, 4),
    omit_mask=st.lists(st.booleans(), min_size=1, max_size=6),
)
def test_shuffled_duplicated_and_missing_callbacks_converge(
    stack: Stack, paths: list[list[str]], seed: int, duplicates: int, omit_mask: list[bool]
) -> None:
    asyncio.run(_shuffled_scenario(stack, paths, seed, duplicates, omit_mask))


@hypothesis_settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(paths=lifecycles)
def test_in_order_callbacks_need_few_gets(stack: Stack, paths: list[list[str]]) -> None:
    asyncio.run(_in_order_scenario(stack, paths))


def test_two_workers_on_one_registration_cannot_corrupt_it(stack: Stack) -> None:
    second = stack.start_worker()

    async def scenario() -> None:
        async with SimulatorControl(stack.sim.base_url) as sim:
            busy = [
                "IN_PROGRESS",
                "PENDING",
                "IN_PROGRESS",
                "ON_HOLD",
                "IN_PROGRESS",
                "PENDING_ATTACHMENTS",
                "IN_QUEUE",
                "IN_PROGRESS",
                "APPROVED",
                "IN_PROGRESS",
                "APPROVED",
            ]
            ids = [(await sim.create_registration(lifecycle=busy))["id"] for _ in range(3)]
            results = await sim.deliver(
                stack.api_url + CALLBACK_PATH,
                event_ids=[e["eventId"] for rid in ids for e in await sim.events(rid)],
                order="shuffled",
                duplicates=20,
                seed=5,
                concurrency=8,
            )
            assert {r["status"] for r in results} == {200}
            await drain(stack.settings, ids, len({r["eventId"] for r in results}))
            await assert_converged(stack, sim, ids)

    asyncio.run(scenario())
    assert second.process is not None and second.process.poll() is None
