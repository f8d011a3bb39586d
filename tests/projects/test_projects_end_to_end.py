"""Two Sinch projects in one deployment, with real processes: an API, a worker and the simulator
serving both projects (each with its own key and HMAC secret) over HTTP. Callbacks for both are
interleaved on their own callback URLs; every GET is made with its project's credentials (the
simulator answers 401, and counts it, to a token of another project's key); no row crosses
projects; and a removed project's callbacks are refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from devtools.simulator import SimulatorControl
from devtools.simulator.projects import ProjectKeys
from tests.support.processes import run_cli
from tests.support.reads import history, registrations
from tests.support.stack import LIFECYCLE, Stack, drain_all, kept_event_ids, running_stack

B = ProjectKeys(
    project_id="proj-b",
    key_id="key-b",
    key_secret="project-b-key-secret-never-logged",
    hmac_secret="project-b-hmac-secret-never-logged",
)
BOUND_SECONDS = 60.0
"""A bound on waiting for the processes (not the contract's 5 s, kept by construction)."""


def _path(project_id: str) -> str:
    return f"/callbacks/sinch/{project_id}/registrations"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        tmp_path,
        "projects",
        sim_projects=[B],
        PROJECT_SECRETS_KEY=Fernet.generate_key().decode(),
    ) as started:
        started.start_api_and_worker()
        yield started


async def test_two_projects_interleaved_stay_apart_end_to_end(stack: Stack, tmp_path: Path) -> None:
    api_url = stack.api_url
    a_id = stack.sim.project_id
    env = {
        **stack.env,
        "PROJECT_KEY_SECRET": B.key_secret,
        "PROJECT_CALLBACK_SECRET": B.hmac_secret,
    }
    added = await asyncio.to_thread(
        run_cli, env, "project", "add", B.project_id, "--key-id", B.key_id, cwd=tmp_path
    )
    assert added.returncode == 0, added.stderr

    async with httpx.AsyncClient(timeout=30) as http:

        async def answer_to_b() -> int:
            # Unsigned: 401 once B is known (nothing kept), 404 before.
            response = await http.post(api_url + _path(B.project_id), content=b"{}")
            return response.status_code

        async with asyncio.timeout(BOUND_SECONDS):
            while await answer_to_b() != 401:
                await asyncio.sleep(0.1)

        async with (
            SimulatorControl(stack.sim.base_url) as sim_a,
            SimulatorControl(f"{stack.sim.base_url}/_sim/projects/{B.project_id}") as sim_b,
        ):
            made_a = [await sim_a.create_registration(lifecycle=LIFECYCLE) for _ in range(3)]
            made_b = [await sim_b.create_registration(lifecycle=LIFECYCLE) for _ in range(3)]
            events_a = [e["eventId"] for e in await sim_a.all_events()]
            events_b = [e["eventId"] for e in await sim_b.all_events()]
            for event_a, event_b in zip_longest(events_a, events_b):
                if event_a is not None:
                    [sent] = await sim_a.deliver(api_url + _path(a_id), event_ids=[event_a])
                    assert sent["status"] == 200
                if event_b is not None:
                    [sent] = await sim_b.deliver(api_url + _path(B.project_id), event_ids=[event_b])
                    assert sent["status"] == 200
            states = await drain_all(stack, limit_seconds=BOUND_SECONDS)
            truth_a = {r["id"]: (await sim_a.registration(r["id"]))["status"] for r in made_a}
            truth_b = {r["id"]: (await sim_b.registration(r["id"]))["status"] for r in made_b}
            stats_a, stats_b = await sim_a.stats(), await sim_b.stats()

        assert set(states.values()) == {"processed"}
        # Each project's Sinch was asked, each with its own token only: a token of the other
        # project's key would have been refused and counted as unauthorized.
        assert stats_a["token"] >= 1 and stats_b["token"] >= 1
        assert stats_a["getRegistration"] >= 1 and stats_b["getRegistration"] >= 1
        assert stats_a["unauthorized"] == 0 and stats_b["unauthorized"] == 0

        local = {r.id: (r.project_id, r.status) for r in await registrations(stack.settings)}
        assert local == {
            **{rid: (a_id, status) for rid, status in truth_a.items()},
            **{rid: (B.project_id, status) for rid, status in truth_b.items()},
        }
        owner = {rid: project for rid, (project, _) in local.items()}
        for row in await history(stack.settings):
            assert row.project_id == owner[row.registration_id]

        removed = await asyncio.to_thread(
            run_cli, env, "project", "remove", B.project_id, "--with-data", cwd=tmp_path
        )
        assert removed.returncode == 0, removed.stderr
        async with asyncio.timeout(BOUND_SECONDS):
            while await answer_to_b() != 404:
                await asyncio.sleep(0.1)
        kept = await kept_event_ids(stack)
        assert len(kept) == len(events_a)
